package phonetic

// Keys returns the phonetic keys of one word: each distinct Double Metaphone
// code (primary, alternate) suffixed with "/" and the word's first vowel
// class. Two words "sound alike" when their Keys intersect.
// The vowel class keeps names with the same consonant skeleton but a
// different first vowel sound apart, which Double Metaphone alone does not:
// John and Jon share keys, John and Jane do not.
//
// Keys returns nil when the word has no non-empty Double Metaphone code
// (the empty word, words such as "h", and words in non-Latin scripts).
// The primary code's key comes first.
func Keys(word string) []string {
	primary, alternate := DoubleMetaphone(word)
	if primary == "" && alternate == "" {
		return nil
	}
	suffix := "/" + VowelClass(word)
	keys := make([]string, 0, 2)
	if primary != "" {
		keys = append(keys, primary+suffix)
	}
	if alternate != "" && alternate != primary {
		keys = append(keys, alternate+suffix)
	}
	return keys
}

// VowelClass returns the class of the first vowel sound of a word: one of
// "a", "e", "i", "o", "u", or "" if none. The rules are in the package
// documentation.
func VowelClass(word string) string {
	// w holds the ASCII letters of the word, lower-cased; everything else is
	// dropped. Letter i is judged once letter i+1 is known (or the word has
	// ended), and the scan stops at the first vowel letter.
	var buf [16]byte
	w := buf[:0]
	for i := 0; i < len(word); i++ {
		c := word[i]
		switch {
		case 'a' <= c && c <= 'z':
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		default:
			continue
		}
		w = append(w, c)
		if k := len(w) - 2; k >= 0 && isVowelLetter(w, k) {
			return vowelClassAt(w, k)
		}
	}
	if k := len(w) - 1; k >= 0 && isVowelLetter(w, k) {
		return vowelClassAt(w, k)
	}
	return ""
}

// vowelClassAt maps the first vowel letter w[i] and the letter after it to
// the vowel class.
func vowelClassAt(w []byte, i int) string {
	var next byte
	if i+1 < len(w) {
		next = w[i+1]
	}
	switch w[i] {
	case 'a':
		if next == 'u' || next == 'w' {
			return "o"
		}
		return "a"
	case 'e':
		if next == 'u' || next == 'w' {
			return "u"
		}
		return "e"
	case 'i':
		if next == 'e' {
			return "e"
		}
		return "i"
	case 'o':
		if next == 'o' || next == 'u' {
			return "u"
		}
		return "o"
	case 'u':
		return "u"
	default: // 'y'
		return "i"
	}
}

// isAEIOU reports whether c is one of a, e, i, o, u.
func isAEIOU(c byte) bool {
	switch c {
	case 'a', 'e', 'i', 'o', 'u':
		return true
	}
	return false
}

// isVowelLetter reports whether w[i] counts as a vowel letter for
// VowelClass: a, e, i, o, u or y, except an initial y before a, e, i, o, u
// (Yolanda) and a u after q before a vowel letter (Quinn), which are
// consonants.
func isVowelLetter(w []byte, i int) bool {
	c := w[i]
	switch c {
	case 'a', 'e', 'i', 'o':
		return true
	case 'y':
		return !(i == 0 && i+1 < len(w) && isAEIOU(w[i+1]))
	case 'u':
		if i > 0 && w[i-1] == 'q' && i+1 < len(w) && (isAEIOU(w[i+1]) || w[i+1] == 'y') {
			return false
		}
		return true
	}
	return false
}
