package phonetic

import "unicode/utf8"

// Internal byte values for the two non-ASCII letters the original algorithm
// knows (their Latin-1 code points), and for any other non-ASCII rune.
const (
	cCedilla  = 0xC7 // Ç
	nTilde    = 0xD1 // Ñ
	otherRune = 0x80 // any other non-ASCII rune: takes a position, codes nothing
)

// maxCode is the length of a Double Metaphone code.
const maxCode = 4

// DoubleMetaphone returns the primary and alternate Double Metaphone codes of
// one word (letters only; callers pass words already case-folded and
// accent-folded to ASCII where possible).
// Codes are at most 4 characters, as in the original algorithm. alternate ==
// primary when the word has no alternate.
//
// Ç is coded as S and Ñ as N; other non-ASCII letters are skipped. Words
// written in non-Latin scripts therefore give empty codes.
func DoubleMetaphone(word string) (primary, alternate string) {
	if word == "" {
		return "", ""
	}
	e := newEncoder(word)
	e.run()
	p, s := e.primary, e.secondary
	if len(p) > maxCode {
		p = p[:maxCode]
	}
	if len(s) > maxCode {
		s = s[:maxCode]
	}
	return string(p), string(s)
}

type encoder struct {
	s         []byte // upper-cased word, one byte per rune, padded with 5 spaces
	length    int    // length of the word without padding
	last      int    // index of the last character of the word
	slavo     bool   // the Slavo-Germanic test of the original
	primary   []byte
	secondary []byte
}

func newEncoder(word string) *encoder {
	s := make([]byte, 0, len(word)+5)
	for i := 0; i < len(word); {
		c := word[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			s = append(s, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(word[i:])
		i += size
		switch r {
		case 'Ç', 'ç':
			s = append(s, cCedilla)
		case 'Ñ', 'ñ':
			s = append(s, nTilde)
		default:
			s = append(s, otherRune)
		}
	}
	n := len(s)
	s = append(s, "     "...)
	e := &encoder{
		s:         s,
		length:    n,
		last:      n - 1,
		primary:   make([]byte, 0, 8),
		secondary: make([]byte, 0, 8),
	}
	e.slavo = e.contains("W") || e.contains("K") || e.contains("CZ") || e.contains("WITZ")
	return e
}

func (e *encoder) contains(sub string) bool {
	word := e.s[:e.length]
	for i := 0; i+len(sub) <= len(word); i++ {
		if string(word[i:i+len(sub)]) == sub {
			return true
		}
	}
	return false
}

// at returns the character at i, or 0 outside the padded word.
func (e *encoder) at(i int) byte {
	if i < 0 || i >= len(e.s) {
		return 0
	}
	return e.s[i]
}

// stringAt reports whether the n characters starting at start equal one of
// opts. A negative start never matches.
func (e *encoder) stringAt(start, n int, opts ...string) bool {
	if start < 0 || start >= len(e.s) {
		return false
	}
	end := min(start+n, len(e.s))
	sub := e.s[start:end]
	for _, o := range opts {
		if string(sub) == o {
			return true
		}
	}
	return false
}

// isVowel reports whether the character at i is inside the word and one of
// A, E, I, O, U, Y.
func (e *encoder) isVowel(i int) bool {
	if i < 0 || i >= e.length {
		return false
	}
	switch e.s[i] {
	case 'A', 'E', 'I', 'O', 'U', 'Y':
		return true
	}
	return false
}

// add appends main to both codes.
func (e *encoder) add(main string) {
	e.primary = append(e.primary, main...)
	e.secondary = append(e.secondary, main...)
}

// add2 appends main to the primary code and alt to the alternate code. An
// alt of " " means "nothing in the alternate" (the original's convention).
func (e *encoder) add2(main, alt string) {
	e.primary = append(e.primary, main...)
	if alt != " " {
		e.secondary = append(e.secondary, alt...)
	}
}

func (e *encoder) germanic() bool {
	return e.stringAt(0, 4, "VAN ", "VON ") || e.stringAt(0, 3, "SCH")
}

func (e *encoder) run() {
	cur := 0
	// Skip the first letter of these initial clusters.
	if e.stringAt(0, 2, "GN", "KN", "PN", "WR", "PS") {
		cur++
	}
	// Initial X is pronounced Z, e.g. Xavier.
	if e.at(0) == 'X' {
		e.add("S")
		cur++
	}
	for len(e.primary) < maxCode || len(e.secondary) < maxCode {
		if cur >= e.length {
			break
		}
		switch e.at(cur) {
		case 'A', 'E', 'I', 'O', 'U', 'Y':
			if cur == 0 {
				e.add("A") // every initial vowel codes as A
			}
			cur++
		case 'B':
			e.add("P")
			cur += e.skipDouble(cur, 'B')
		case cCedilla:
			e.add("S")
			cur++
		case 'C':
			cur = e.doC(cur)
		case 'D':
			switch {
			case e.stringAt(cur, 2, "DG"):
				if e.stringAt(cur+2, 1, "I", "E", "Y") {
					e.add("J") // edge
					cur += 3
				} else {
					e.add("TK") // edgar
					cur += 2
				}
			case e.stringAt(cur, 2, "DT", "DD"):
				e.add("T")
				cur += 2
			default:
				e.add("T")
				cur++
			}
		case 'F':
			e.add("F")
			cur += e.skipDouble(cur, 'F')
		case 'G':
			cur = e.doG(cur)
		case 'H':
			// Keep only when first and before a vowel, or between two vowels.
			if (cur == 0 || e.isVowel(cur-1)) && e.isVowel(cur+1) {
				e.add("H")
				cur += 2
			} else {
				cur++
			}
		case 'J':
			cur = e.doJ(cur)
		case 'K':
			e.add("K")
			cur += e.skipDouble(cur, 'K')
		case 'L':
			if e.at(cur+1) == 'L' {
				// Spanish, e.g. cabrillo, gallegos.
				if (cur == e.length-3 && e.stringAt(cur-1, 4, "ILLO", "ILLA", "ALLE")) ||
					((e.stringAt(e.last-1, 2, "AS", "OS") || e.stringAt(e.last, 1, "A", "O")) &&
						e.stringAt(cur-1, 4, "ALLE")) {
					e.add2("L", " ")
					cur += 2
					break
				}
				cur += 2
			} else {
				cur++
			}
			e.add("L")
		case 'M':
			if (e.stringAt(cur-1, 3, "UMB") && (cur+1 == e.last || e.stringAt(cur+2, 2, "ER"))) ||
				e.at(cur+1) == 'M' {
				cur += 2 // dumb, thumb, plumber
			} else {
				cur++
			}
			e.add("M")
		case 'N':
			e.add("N")
			cur += e.skipDouble(cur, 'N')
		case nTilde:
			e.add("N")
			cur++
		case 'P':
			if e.at(cur+1) == 'H' {
				e.add("F")
				cur += 2
				break
			}
			// Campbell, raspberry.
			if e.stringAt(cur+1, 1, "P", "B") {
				cur += 2
			} else {
				cur++
			}
			e.add("P")
		case 'Q':
			e.add("K")
			cur += e.skipDouble(cur, 'Q')
		case 'R':
			// French, e.g. rogier, but not hochmeier.
			if cur == e.last && !e.slavo && e.stringAt(cur-2, 2, "IE") && !e.stringAt(cur-4, 2, "ME", "MA") {
				e.add2("", "R")
			} else {
				e.add("R")
			}
			cur += e.skipDouble(cur, 'R')
		case 'S':
			cur = e.doS(cur)
		case 'T':
			cur = e.doT(cur)
		case 'V':
			e.add("F")
			cur += e.skipDouble(cur, 'V')
		case 'W':
			cur = e.doW(cur)
		case 'X':
			// French, e.g. breaux.
			if !(cur == e.last && (e.stringAt(cur-3, 3, "IAU", "EAU") || e.stringAt(cur-2, 2, "AU", "OU"))) {
				e.add("KS")
			}
			if e.stringAt(cur+1, 1, "C", "X") {
				cur += 2
			} else {
				cur++
			}
		case 'Z':
			if e.at(cur+1) == 'H' {
				e.add("J") // Chinese pinyin, e.g. zhao
				cur += 2
				break
			}
			if e.stringAt(cur+1, 2, "ZO", "ZI", "ZA") || (e.slavo && cur > 0 && e.at(cur-1) != 'T') {
				e.add2("S", "TS")
			} else {
				e.add("S")
			}
			cur += e.skipDouble(cur, 'Z')
		default:
			cur++
		}
	}
}

// skipDouble returns 2 when the letter after cur is c, else 1.
func (e *encoder) skipDouble(cur int, c byte) int {
	if e.at(cur+1) == c {
		return 2
	}
	return 1
}

func (e *encoder) doC(cur int) int {
	// Various Germanic, e.g. bacher, macher (but not bachi, bache).
	if cur > 1 && !e.isVowel(cur-2) && e.stringAt(cur-1, 3, "ACH") &&
		e.at(cur+2) != 'I' && (e.at(cur+2) != 'E' || e.stringAt(cur-2, 6, "BACHER", "MACHER")) {
		e.add("K")
		return cur + 2
	}
	// Caesar.
	if cur == 0 && e.stringAt(cur, 6, "CAESAR") {
		e.add("S")
		return cur + 2
	}
	// Italian chianti.
	if e.stringAt(cur, 4, "CHIA") {
		e.add("K")
		return cur + 2
	}
	if e.stringAt(cur, 2, "CH") {
		// Michael.
		if cur > 0 && e.stringAt(cur, 4, "CHAE") {
			e.add2("K", "X")
			return cur + 2
		}
		// Greek roots, e.g. chemistry, chorus.
		if cur == 0 && (e.stringAt(cur+1, 5, "HARAC", "HARIS") || e.stringAt(cur+1, 3, "HOR", "HYM", "HIA", "HEM")) &&
			!e.stringAt(0, 5, "CHORE") {
			e.add("K")
			return cur + 2
		}
		// Germanic, Greek, or otherwise CH for the KH sound.
		if e.germanic() ||
			e.stringAt(cur-2, 6, "ORCHES", "ARCHIT", "ORCHID") ||
			e.stringAt(cur+2, 1, "T", "S") ||
			((e.stringAt(cur-1, 1, "A", "O", "U", "E") || cur == 0) &&
				e.stringAt(cur+2, 1, "L", "R", "N", "M", "B", "H", "F", "V", "W", " ")) {
			e.add("K")
		} else if cur > 0 {
			if e.stringAt(0, 2, "MC") {
				e.add("K") // McHugh
			} else {
				e.add2("X", "K")
			}
		} else {
			e.add("X")
		}
		return cur + 2
	}
	// Czerny.
	if e.stringAt(cur, 2, "CZ") && !e.stringAt(cur-2, 4, "WICZ") {
		e.add2("S", "X")
		return cur + 2
	}
	// Focaccia.
	if e.stringAt(cur+1, 3, "CIA") {
		e.add("X")
		return cur + 3
	}
	// Double C, but not McClellan.
	if e.stringAt(cur, 2, "CC") && !(cur == 1 && e.at(0) == 'M') {
		// Bellocchio, but not bacchus.
		if e.stringAt(cur+2, 1, "I", "E", "H") && !e.stringAt(cur+2, 2, "HU") {
			if (cur == 1 && e.at(cur-1) == 'A') || e.stringAt(cur-1, 5, "UCCEE", "UCCES") {
				e.add("KS") // accident, accede, succeed
			} else {
				e.add("X") // bacci, bertucci
			}
			return cur + 3
		}
		// Pierce's rule.
		e.add("K")
		return cur + 2
	}
	if e.stringAt(cur, 2, "CK", "CG", "CQ") {
		e.add("K")
		return cur + 2
	}
	if e.stringAt(cur, 2, "CI", "CE", "CY") {
		// Italian vs. English.
		if e.stringAt(cur, 3, "CIO", "CIE", "CIA") {
			e.add2("S", "X")
		} else {
			e.add("S")
		}
		return cur + 2
	}
	e.add("K")
	// Mac Caffrey, Mac Gregor.
	if e.stringAt(cur+1, 2, " C", " Q", " G") {
		return cur + 3
	}
	if e.stringAt(cur+1, 1, "C", "K", "Q") && !e.stringAt(cur+1, 2, "CE", "CI") {
		return cur + 2
	}
	return cur + 1
}

func (e *encoder) doG(cur int) int {
	if e.at(cur+1) == 'H' {
		if cur > 0 && !e.isVowel(cur-1) {
			e.add("K")
			return cur + 2
		}
		// Ghislane, ghiradelli.
		if cur == 0 {
			if e.at(cur+2) == 'I' {
				e.add("J")
			} else {
				e.add("K")
			}
			return cur + 2
		}
		// Parker's rule (with further refinements): hugh, bough, broughton.
		if (cur > 1 && e.stringAt(cur-2, 1, "B", "H", "D")) ||
			(cur > 2 && e.stringAt(cur-3, 1, "B", "H", "D")) ||
			(cur > 3 && e.stringAt(cur-4, 1, "B", "H")) {
			return cur + 2
		}
		// Laugh, McLaughlin, cough, gough, rough, tough.
		if cur > 2 && e.at(cur-1) == 'U' && e.stringAt(cur-3, 1, "C", "G", "L", "R", "T") {
			e.add("F")
		} else if cur > 0 && e.at(cur-1) != 'I' {
			e.add("K")
		}
		return cur + 2
	}
	if e.at(cur+1) == 'N' {
		if cur == 1 && e.isVowel(0) && !e.slavo {
			e.add2("KN", "N")
		} else if !e.stringAt(cur+2, 2, "EY") && e.at(cur+1) != 'Y' && !e.slavo {
			// Not e.g. cagney.
			e.add2("N", "KN")
		} else {
			e.add("KN")
		}
		return cur + 2
	}
	// Tagliaro.
	if e.stringAt(cur+1, 2, "LI") && !e.slavo {
		e.add2("KL", "L")
		return cur + 2
	}
	// -ges-, -gep-, -gel-, -gie- at the beginning.
	if cur == 0 && (e.at(cur+1) == 'Y' ||
		e.stringAt(cur+1, 2, "ES", "EP", "EB", "EL", "EY", "IB", "IL", "IN", "IE", "EI", "ER")) {
		e.add2("K", "J")
		return cur + 2
	}
	// -ger-, -gy-.
	if (e.stringAt(cur+1, 2, "ER") || e.at(cur+1) == 'Y') &&
		!e.stringAt(0, 6, "DANGER", "RANGER", "MANGER") &&
		!e.stringAt(cur-1, 1, "E", "I") &&
		!e.stringAt(cur-1, 3, "RGY", "OGY") {
		e.add2("K", "J")
		return cur + 2
	}
	// Italian, e.g. biaggi.
	if e.stringAt(cur+1, 1, "E", "I", "Y") || e.stringAt(cur-1, 4, "AGGI", "OGGI") {
		if e.germanic() || e.stringAt(cur+1, 2, "ET") {
			e.add("K") // obviously Germanic
		} else if e.stringAt(cur+1, 4, "IER ") {
			e.add("J") // always soft with a French ending
		} else {
			e.add2("J", "K")
		}
		return cur + 2
	}
	e.add("K")
	return cur + e.skipDouble(cur, 'G')
}

func (e *encoder) doJ(cur int) int {
	// Obviously Spanish: jose, san jacinto.
	if e.stringAt(cur, 4, "JOSE") || e.stringAt(0, 4, "SAN ") {
		if (cur == 0 && e.at(cur+4) == ' ') || e.stringAt(0, 4, "SAN ") {
			e.add("H")
		} else {
			e.add2("J", "H")
		}
		return cur + 1
	}
	switch {
	case cur == 0:
		e.add2("J", "A") // Yankelovich / Jankelowicz
	case e.isVowel(cur-1) && !e.slavo && (e.at(cur+1) == 'A' || e.at(cur+1) == 'O'):
		e.add2("J", "H") // Spanish pronunciation of e.g. bajador
	case cur == e.last:
		e.add2("J", " ")
	case !e.stringAt(cur+1, 1, "L", "T", "K", "S", "N", "M", "B", "Z") && !e.stringAt(cur-1, 1, "S", "K", "L"):
		e.add("J")
	}
	return cur + e.skipDouble(cur, 'J')
}

func (e *encoder) doS(cur int) int {
	// Island, isle, carlisle, carlysle.
	if e.stringAt(cur-1, 3, "ISL", "YSL") {
		return cur + 1
	}
	// Sugar-.
	if cur == 0 && e.stringAt(cur, 5, "SUGAR") {
		e.add2("X", "S")
		return cur + 1
	}
	if e.stringAt(cur, 2, "SH") {
		if e.stringAt(cur+1, 4, "HEIM", "HOEK", "HOLM", "HOLZ") {
			e.add("S") // Germanic
		} else {
			e.add("X")
		}
		return cur + 2
	}
	// Italian and Armenian.
	if e.stringAt(cur, 3, "SIO", "SIA") || e.stringAt(cur, 4, "SIAN") {
		if !e.slavo {
			e.add2("S", "X")
		} else {
			e.add("S")
		}
		return cur + 3
	}
	// German and anglicisations (smith/schmidt, snider/schneider); Slavic -sz-.
	if (cur == 0 && e.stringAt(cur+1, 1, "M", "N", "L", "W")) || e.stringAt(cur+1, 1, "Z") {
		e.add2("S", "X")
		if e.stringAt(cur+1, 1, "Z") {
			return cur + 2
		}
		return cur + 1
	}
	if e.stringAt(cur, 2, "SC") {
		// Schlesinger's rule.
		if e.at(cur+2) == 'H' {
			// Dutch origin, e.g. school, schooner.
			if e.stringAt(cur+3, 2, "OO", "ER", "EN", "UY", "ED", "EM") {
				if e.stringAt(cur+3, 2, "ER", "EN") {
					e.add2("X", "SK") // schermerhorn, schenker
				} else {
					e.add("SK")
				}
				return cur + 3
			}
			if cur == 0 && !e.isVowel(3) && e.at(3) != 'W' {
				e.add2("X", "S")
			} else {
				e.add("X")
			}
			return cur + 3
		}
		if e.stringAt(cur+2, 1, "I", "E", "Y") {
			e.add("S")
			return cur + 3
		}
		e.add("SK")
		return cur + 3
	}
	// French, e.g. resnais, artois.
	if cur == e.last && e.stringAt(cur-2, 2, "AI", "OI") {
		e.add2("", "S")
	} else {
		e.add("S")
	}
	if e.stringAt(cur+1, 1, "S", "Z") {
		return cur + 2
	}
	return cur + 1
}

func (e *encoder) doT(cur int) int {
	if e.stringAt(cur, 4, "TION") {
		e.add("X")
		return cur + 3
	}
	if e.stringAt(cur, 3, "TIA", "TCH") {
		e.add("X")
		return cur + 3
	}
	if e.stringAt(cur, 2, "TH") || e.stringAt(cur, 3, "TTH") {
		// Thomas, thames, or Germanic.
		if e.stringAt(cur+2, 2, "OM", "AM") || e.germanic() {
			e.add("T")
		} else {
			e.add2("0", "T")
		}
		return cur + 2
	}
	e.add("T")
	if e.stringAt(cur+1, 1, "T", "D") {
		return cur + 2
	}
	return cur + 1
}

func (e *encoder) doW(cur int) int {
	// Can also be in the middle of a word.
	if e.stringAt(cur, 2, "WR") {
		e.add("R")
		return cur + 2
	}
	if cur == 0 && (e.isVowel(cur+1) || e.stringAt(cur, 2, "WH")) {
		if e.isVowel(cur + 1) {
			e.add2("A", "F") // Wasserman should match Vasserman
		} else {
			e.add("A") // Uomo should match Womo
		}
	}
	// Arnow should match Arnoff.
	if (cur == e.last && e.isVowel(cur-1)) ||
		e.stringAt(cur-1, 5, "EWSKI", "EWSKY", "OWSKI", "OWSKY") ||
		e.stringAt(0, 3, "SCH") {
		e.add2("", "F")
		return cur + 1
	}
	// Polish, e.g. filipowicz.
	if e.stringAt(cur, 4, "WICZ", "WITZ") {
		e.add2("TS", "FX")
		return cur + 4
	}
	return cur + 1
}
