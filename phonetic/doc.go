// Package phonetic owns pgphi's phonetic keys: Double Metaphone (Lawrence
// Philips, "The Double Metaphone Search Algorithm", C/C++ Users Journal,
// June 2000) plus a vowel class, documented so that another implementation
// can reproduce them byte for byte.
//
// # Double Metaphone
//
// [DoubleMetaphone] is a hand-written implementation of the published
// algorithm. It follows the original C++ code's rules, including its
// quirks, with these conventions:
//
//   - Input is upper-cased (ASCII a–z only). 'Ç'/'ç' is the letter Ç (coded S)
//     and 'Ñ'/'ñ' is the letter Ñ (coded N), as in the original. Every other
//     non-ASCII rune takes one position but codes nothing (it behaves like an
//     unknown character in the original's switch). Callers fold accents to
//     ASCII first, so "Müller" should arrive as "muller".
//   - As in the original the word is padded with five spaces, so that rules
//     which look for a word end ("IER ", "VAN ", "SAN ") work; a space inside
//     the input is kept, so "Mac Gregor" codes like the original's
//     "MAC GREGOR" (MKRK).
//   - Where the original appends " " to one code (J at the end of a word,
//     Spanish LL) nothing is appended: that code has no sound there.
//   - Both codes are cut to 4 characters. The alternate equals the primary
//     when the word has no alternate pronunciation.
//   - Codes contain only 'A'–'Z' and '0' (zero, the TH sound).
//
// # Keys and the vowel class
//
// Double Metaphone keeps only the first vowel of a word (as "A", and only
// when the word starts with it), so John, Jane, Jean and June all code
// JN/AN. [Keys] appends a vowel class to each code so that names with the
// same consonant skeleton but a different first vowel sound stay apart:
//
//	Keys("John") = ["JN/o", "AN/o"]
//	Keys("Jane") = ["JN/a", "AN/a"]
//
// Two words sound alike when their key sets intersect.
//
// [VowelClass] rules (w = the ASCII letters of the word, lower-cased; every
// other character, including spaces, apostrophes and non-ASCII letters, is
// dropped):
//
//  1. The vowel letters are a, e, i, o, u and y, except that
//     y is a consonant when it is the first letter of w and is followed
//     by a, e, i, o or u (Yolanda, Yusuf), and
//     u is a consonant when it directly follows q and is followed by a
//     vowel letter (Quinn, Quentin).
//  2. Skip the leading consonants; let v be the first vowel letter and n
//     the letter after it (if any).
//  3. The class is:
//     v = a: "o" if n is u or w (Paul, Lauren, Lawrence), else "a";
//     v = e: "u" if n is u or w (Euan, Ewan, Lewis), else "e" (ea, ee, ei, ey);
//     v = i: "e" if n is e (Pierce, Dieter), else "i";
//     v = o: "u" if n is o or u (Moon, Louis), else "o" (oa, oe, oh, oi, oy);
//     v = u: "u";
//     v = y: "i" (Smyth, Lynn, Yvonne).
//  4. No vowel letter: "" (the key then ends in "/").
//
// So John/Jon/Joan are "o", Jane "a", Jean "e", June "u", Smith/Smyth
// "i", Catherine/Kathryn "a", Stephen/Steven "e".
//
// Words in non-Latin scripts (CJK, Arabic, Cyrillic, ...) have empty
// Double Metaphone codes and [Keys] returns nil for them: phonetic search
// does not apply to such names (exact, prefix and contains search still do).
package phonetic
