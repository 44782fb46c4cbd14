package blindindex

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// apostrophes are the characters Normalize rewrites to an ASCII apostrophe
// (U+0027) before anything else: right and left single quotation marks, the
// modifier letter apostrophe, the acute accent, the grave accent and the prime.
// (U+02BB, the Hawaiian ʻokina, is a letter and is left alone.)
var apostrophes = map[rune]bool{
	'\u2019': true, // ’
	'\u2018': true, // ‘
	'\u02bc': true, // ʼ
	'\u00b4': true, // ´ (NFKC would turn it into a space and a combining accent)
	'`':      true,
	'\u2032': true, // ′
}

// hyphens are the characters Normalize rewrites to an ASCII hyphen-minus:
// hyphen, non-breaking hyphen, figure dash, en dash and minus sign.
var hyphens = map[rune]bool{
	'\u2010': true,
	'\u2011': true,
	'\u2012': true,
	'\u2013': true,
	'\u2212': true,
}

// letterFolds maps letters that have no canonical decomposition (so dropping
// combining marks leaves them alone) to the ASCII spelling they are usually
// replaced with. Only applied with foldAccents. Input is already case folded,
// so only lower-case forms appear. ß and ẞ need no entry: case folding turns
// them into "ss".
var letterFolds = map[rune]string{
	'ø': "o",  // U+00F8
	'æ': "ae", // U+00E6
	'œ': "oe", // U+0153
	'ł': "l",  // U+0142
	'đ': "d",  // U+0111
	'ð': "d",  // U+00F0
	'þ': "th", // U+00FE
	'ħ': "h",  // U+0127
	'ı': "i",  // U+0131 dotless i
}

// keepMark reports whether a nonspacing mark is part of the spelling and must
// survive accent folding: marks of Indic, Southeast Asian and other scripts
// whose vowel signs and viramas are Mn, the Japanese (semi-)voiced sound
// marks, and variation selectors (emoji presentation).
func keepMark(r rune) bool {
	switch {
	case r == '\u3099' || r == '\u309a':
		return true
	case r >= '\ufe00' && r <= '\ufe0f', r >= 0xe0100 && r <= 0xe01ef:
		return true
	}
	return !unicode.In(r, unicode.Inherited, unicode.Latin, unicode.Greek, unicode.Cyrillic,
		unicode.Armenian, unicode.Hebrew, unicode.Arabic, unicode.Syriac)
}

// Normalize returns the canonical form of s used for every blind index term
// and every query. It is deterministic and idempotent, and the same function
// runs at write and at query time:
//
//  1. typographic apostrophes (’ ‘ ʼ ´ ` ′) become ASCII ' and typographic
//     hyphens and dashes (U+2010..U+2013, U+2212) become ASCII -;
//  2. NFKC (full-width letters become ASCII, ligatures split, U+00A0 and
//     U+3000 become spaces);
//  3. full Unicode case folding (cases.Fold: "Straße" -> "strasse",
//     "İ" -> "i̇"), then NFKC again;
//  4. with foldAccents: NFD, nonspacing marks (Mn) of Latin, Greek, Cyrillic,
//     Armenian, Hebrew, Arabic and Syriac and the script-neutral combining
//     marks are dropped (é -> e, i̇ -> i, Arabic harakat vanish), marks that
//     spell Indic and other scripts, the kana voicing marks and emoji
//     variation selectors are kept; then ø->o, æ->ae, œ->oe, ł->l, đ->d,
//     ð->d, þ->th, ħ->h, ı->i; then NFC;
//  5. leading and trailing white space is removed and every run of Unicode
//     white space becomes one ASCII space.
//
// CJK, Arabic, Cyrillic and other scripts and emoji pass through apart from
// the steps above. Invalid UTF-8 bytes become U+FFFD.
func Normalize(s string, foldAccents bool) string {
	if isASCII(s) {
		return normalizeASCII(s)
	}
	// The steps do not commute for every code point (NFKC can produce a
	// typographic apostrophe or hyphen after they were mapped; case folding
	// of some scripts, such as Cherokee, maps lower to upper case), so apply
	// them until nothing changes: Normalize is idempotent, which write and
	// query time rely on. Two rounds settle every input seen by the fuzzer;
	// the bound keeps a pathological input from looping.
	out := normalizeSlow(s, foldAccents)
	for range 4 {
		next := out
		if isASCII(next) {
			next = normalizeASCII(next)
		} else {
			next = normalizeSlow(next, foldAccents)
		}
		if next == out {
			break
		}
		out = next
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// normalizeASCII is Normalize for ASCII input, where NFKC and accent
// folding change nothing, case folding only lowers A-Z and the only
// typographic apostrophe is '`'.
func normalizeASCII(s string) string {
	b := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c >= '\t' && c <= '\r':
			space = len(b) > 0
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == '`':
			c = '\''
		}
		if space {
			b = append(b, ' ')
			space = false
		}
		b = append(b, c)
	}
	return string(b)
}

func normalizeSlow(s string, foldAccents bool) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\ufffd")
	}
	s = strings.Map(func(r rune) rune {
		switch {
		case apostrophes[r]:
			return '\''
		case hyphens[r]:
			return '-'
		}
		return r
	}, s)
	s = norm.NFKC.String(s)
	s = cases.Fold().String(s)
	// Unicode folds Cherokee to capital letters, but x/text's Fold maps some
	// capitals back to small ones: settle on capitals, so that folding twice
	// equals folding once.
	s = strings.Map(func(r rune) rune {
		if (r >= 0x13A0 && r <= 0x13FD) || (r >= 0xAB70 && r <= 0xABBF) {
			return unicode.ToUpper(r)
		}
		return r
	}, s)
	s = norm.NFKC.String(s)
	if foldAccents {
		s = foldMarks(s)
	}
	return collapseSpace(s)
}

// foldMarks is step 4 of Normalize.
func foldMarks(s string) string {
	d := norm.NFD.String(s)
	var b strings.Builder
	b.Grow(len(d))
	for _, r := range d {
		if unicode.Is(unicode.Mn, r) && !keepMark(r) {
			continue
		}
		if f, ok := letterFolds[r]; ok {
			b.WriteString(f)
			continue
		}
		b.WriteRune(r)
	}
	return norm.NFC.String(b.String())
}

// collapseSpace trims s and replaces every run of white space with one ' '.
func collapseSpace(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
