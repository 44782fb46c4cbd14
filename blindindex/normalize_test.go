package blindindex

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalize(t *testing.T) {
	cases := []struct {
		in, fold, keep string // expected with foldAccents true and false
	}{
		{"", "", ""},
		{" \t\n ", "", ""},
		{"  José   García ", "jose garcia", "josé garcía"},
		{"JOSE\u0301", "jose", "josé"},             // combining accent, NFC when kept
		{"ＪＯＨＮ　ＳＭＩＴＨ", "john smith", "john smith"}, // full-width letters and ideographic space
		{"Straße", "strasse", "strasse"},           // ß folds to ss
		{"STRAẞE", "strasse", "strasse"},           // capital sharp s
		{"İstanbul", "istanbul", "i\u0307stanbul"}, // Turkish dotted I under full (non-Turkic) folding
		{"ISTANBUL", "istanbul", "istanbul"},       // I folds to i, not ı
		{"Işık", "isik", "işık"},                   // dotless ı folded to i only with accents
		{"Ørsted Æsir Œuvre", "orsted aesir oeuvre", "ørsted æsir œuvre"},
		{"Łódź", "lodz", "łódź"},
		{"Đorđe Þór Ðiðrik Ħal", "dorde thor didrik hal", "đorđe þór ðiðrik ħal"},
		{"O’Brien", "o'brien", "o'brien"}, // typographic apostrophes
		{"O‘Neil ʼx´y`z", "o'neil 'x'y'z", "o'neil 'x'y'z"},
		{"Jean–Pierre Jean‐Luc", "jean-pierre jean-luc", "jean-pierre jean-luc"},
		{"ﬁnn", "finn", "finn"},                       // ligature (NFKC)
		{"a\u00a0\u2003b\r\nc", "a b c", "a b c"},     // NBSP, em space, CRLF
		{"李小龙", "李小龙", "李小龙"},                         // CJK passes through
		{"ｶﾞｷﾞ", "ガギ", "ガギ"},                          // half-width kana; voicing mark kept
		{"مُحَمَّد", "محمد", "مُحَمَّد"},              // Arabic harakat are Mn
		{"Пётр ИВАНОВ", "петр иванов", "пётр иванов"}, // Cyrillic case folding
		{"ΣΟΦΊΑ", "σοφια", "σοφία"},                   // Greek
		{"कुमार", "कुमार", "कुमार"},                   // Devanagari vowel signs are spelling
		{"👍🏽 ❤️ 👨‍👩‍👧", "👍🏽 ❤️ 👨‍👩‍👧", "👍🏽 ❤️ 👨‍👩‍👧"}, // emoji, skin tone, VS16, ZWJ preserved
		{"a\xffb", "a\ufffdb", "a\ufffdb"}, // invalid UTF-8
	}
	for _, c := range cases {
		if got := Normalize(c.in, true); got != c.fold {
			t.Errorf("Normalize(%q, true) = %q, want %q", c.in, got, c.fold)
		}
		if got := Normalize(c.in, false); got != c.keep {
			t.Errorf("Normalize(%q, false) = %q, want %q", c.in, got, c.keep)
		}
	}
}

// randomText draws strings from a mix of scripts, marks, spaces, ligatures,
// compatibility characters and emoji.
func randomText(r *rand.Rand) string {
	pools := []string{
		"abcxyzABCXYZ '-’ʼ‘´`‐–−",
		"ßẞİıIiØøÆæŒœŁłĐđÐðÞþĦħÅåÇçÑñ",
		"\u0301\u0308\u0327\u0307\u030a\u0323\u0338",
		" \t\n\u00a0\u3000\u2003\u200b\u200d",
		"ＡＢＣａｂｃ０１２ﬁﬂﬃ㍿㌀Ⅻⅷ½",
		"李小龙王芳ｶﾞｷﾞガギ\u3099\u309a한국어",
		"مُحَمَّدعلي\u064b\u0670",
		"ПётрИВАНОВёЁ",
		"ΣΟΦΊΑσοφίας",
		"कुमार्",
		"👍🏽❤️👨‍👩‍👧\ufe0f\u20e3",
		"ǅǄǆﬅ\u1e9e\u0345ΐΰ",
	}
	var b strings.Builder
	n := r.IntN(12)
	for range n {
		p := []rune(pools[r.IntN(len(pools))])
		b.WriteRune(p[r.IntN(len(p))])
	}
	return b.String()
}

func TestNormalizeIdempotent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 50000 {
		s := randomText(r)
		for _, fold := range []bool{true, false} {
			n := Normalize(s, fold)
			if !utf8.ValidString(n) {
				t.Fatalf("Normalize(%q, %v) is not UTF-8", s, fold)
			}
			if n2 := Normalize(n, fold); n2 != n {
				t.Fatalf("not idempotent: %q -> %q -> %q (fold %v)", s, n, n2, fold)
			}
			if strings.HasPrefix(n, " ") || strings.HasSuffix(n, " ") || strings.Contains(n, "  ") {
				t.Fatalf("white space not collapsed: %q -> %q", s, n)
			}
		}
	}
}

func TestNormalizeASCIIFastPath(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 100000 {
		b := make([]byte, r.IntN(16))
		for i := range b {
			b[i] = byte(r.IntN(128))
		}
		s := string(b)
		for _, fold := range []bool{true, false} {
			if fast, slow := Normalize(s, fold), normalizeSlow(s, fold); fast != slow {
				t.Fatalf("%q: fast path %q, general %q", s, fast, slow)
			}
		}
	}
}
