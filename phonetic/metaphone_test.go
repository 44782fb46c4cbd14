package phonetic

import (
	"strings"
	"testing"
)

// Expected codes were derived by hand by walking the rules of the original
// algorithm (Philips, C/C++ Users Journal, June 2000) and cross-checked with
// the examples published with it (Smith SM0/XMT, Schmidt XMT/SMT, ...).
// Where a commonly quoted value differs from the original rules, the original
// wins and the case carries a comment.
var dmCases = []struct {
	word, primary, alternate string
}{
	// Examples from the article and Wikipedia.
	{"Smith", "SM0", "XMT"},
	{"Schmidt", "XMT", "SMT"},
	{"Smyth", "SM0", "XMT"},

	// Initial clusters and initial letters.
	{"Knight", "NT", "NT"},
	{"Knuth", "N0", "NT"},
	{"Wright", "RT", "RT"},
	{"Gnome", "NM", "NM"},
	{"Psychology", "SXLJ", "SKLK"},
	{"Xavier", "SF", "SFR"}, // initial X = S; French final -IER: R only in the alternate
	{"Edge", "AJ", "AJ"},
	{"Uomo", "AM", "AM"},
	{"Womo", "AM", "FM"}, // initial W + vowel: A / F (Wasserman ~ Vasserman)
	{"Wasserman", "ASRM", "FSRM"},
	{"Island", "ALNT", "ALNT"}, // silent S in ISL

	// B, D, F, M, N, P, Q, V.
	{"Bacchus", "PKS", "PKS"}, // CC before HU: K
	{"Dumb", "TM", "TM"},      // final UMB: B silent
	{"Thumb", "0M", "TM"},
	{"Plumber", "PLMR", "PLMR"}, // UMB before ER
	{"Edgar", "ATKR", "ATKR"},   // DG not before E/I/Y: TK
	{"Philip", "FLP", "FLP"},
	{"Campbell", "KMPL", "KMPL"}, // PB: B silent
	// Thompson: TH before OM is T; the P is coded (only a following P or B
	// is skipped), so Thompson is TMPS, not TMSN as sometimes quoted, and
	// Double Metaphone does not match Thompson with Thomson.
	{"Thompson", "TMPS", "TMPS"},
	{"Thomson", "TMSN", "TMSN"},
	{"Thomas", "TMS", "TMS"},
	{"Thames", "TMS", "TMS"},

	// C.
	{"Caesar", "SSR", "SSR"},
	{"Chianti", "KNT", "KNT"},
	{"Michael", "MKL", "MXL"},
	{"Chemistry", "KMST", "KMST"},
	{"Chorus", "KRS", "KRS"},
	{"Charles", "XRLS", "XRLS"},
	{"Orchestra", "ARKS", "ARKS"},
	{"Architect", "ARKT", "ARKT"},
	{"Bacher", "PKR", "PKR"},
	{"Tichner", "TXNR", "TKNR"},
	{"McHugh", "MK", "MK"},
	{"Czerny", "SRN", "XRN"},
	{"Focaccia", "FKX", "FKX"},
	{"Accident", "AKST", "AKST"},
	{"Succeed", "SKST", "SKST"},
	{"Bellocchio", "PLX", "PLX"},
	{"McClellan", "MKLL", "MKLL"},
	{"Mac Gregor", "MKRK", "MKRK"}, // "C G": the G after the space is skipped
	{"Mac Caffrey", "MKFR", "MKFR"},
	// Original rules code both the K and the C (Apache Commons Codec later
	// changed this, CODEC-281); we follow the original.
	{"Kirkcaldy", "KRKK", "KRKK"},
	{"Catherine", "K0RN", "KTRN"},
	{"Katherine", "K0RN", "KTRN"},
	{"Kathryn", "K0RN", "KTRN"},

	// G.
	{"Gough", "KF", "KF"},
	{"Tough", "TF", "TF"},
	{"Laugh", "LF", "LF"},
	{"Bough", "P", "P"},
	{"Hugh", "H", "H"},
	{"Ghislane", "JLN", "JLN"}, // S silent after I before L (the "island" rule)
	{"Ghiradelli", "JRTL", "JRTL"},
	{"Agnes", "AKNS", "ANS"},
	{"Cagney", "KKN", "KKN"},
	{"Tagliaro", "TKLR", "TLR"},
	{"Gerber", "KRPR", "JRPR"},
	{"Danger", "TNJR", "TNKR"},
	{"Ranger", "RNJR", "RNKR"},
	{"Biaggi", "PJ", "PK"},
	{"Gallegos", "KLKS", "KKS"},
	// Rogier: G before "IER" + end of word is "always soft if French ending"
	// in the original (it tests "IER " against the space-padded word), so the
	// G is J in both codes. Some ports that drop the padding give RJ/RKR.
	{"Rogier", "RJ", "RJR"},

	// H, J, K, L.
	{"Hochmeier", "HKMR", "HKMR"}, // not French: R in both
	{"Jose", "HS", "HS"},
	{"San Jacinto", "SNHS", "SNHS"},
	{"Bajador", "PJTR", "PHTR"},
	{"Jankelowicz", "JNKL", "ANKL"},
	{"Yankelovich", "ANKL", "ANKL"},
	{"Jones", "JNS", "ANS"},
	{"John", "JN", "AN"},
	{"Cabrillo", "KPRL", "KPR"},

	// R, S, T, W, X, Z.
	{"Arnow", "ARN", "ARNF"},
	{"Arnoff", "ARNF", "ARNF"},
	{"Filipowicz", "FLPT", "FLPF"},
	{"Resnais", "RSN", "RSNS"},
	{"Artois", "ART", "ARTS"},
	{"Sugar", "XKR", "SKR"},
	{"School", "SKL", "SKL"},
	{"Schenker", "XNKR", "SKNK"},
	{"Schneider", "XNTR", "SNTR"},
	{"Snider", "SNTR", "XNTR"},
	{"Stephen", "STFN", "STFN"},
	{"Steven", "STFN", "STFN"},
	{"Breaux", "PR", "PR"},
	{"Zhao", "J", "J"},
	{"Pizza", "PS", "PTS"},

	// Ç and Ñ.
	{"Nuñez", "NNS", "NNS"},
	{"NUÑEZ", "NNS", "NNS"},
	{"Garçon", "KRSN", "KRSN"},
	{"Françoise", "FRNS", "FRNS"},
}

func TestDoubleMetaphone(t *testing.T) {
	for _, c := range dmCases {
		p, a := DoubleMetaphone(c.word)
		if p != c.primary || a != c.alternate {
			t.Errorf("DoubleMetaphone(%q) = %q, %q; want %q, %q", c.word, p, a, c.primary, c.alternate)
		}
		// Case must not matter.
		lp, la := DoubleMetaphone(strings.ToLower(c.word))
		if lp != p || la != a {
			t.Errorf("DoubleMetaphone(%q) = %q, %q; differs from %q: %q, %q",
				strings.ToLower(c.word), lp, la, c.word, p, a)
		}
	}
}

func TestDoubleMetaphoneEdgeCases(t *testing.T) {
	cases := []struct {
		word, primary, alternate string
	}{
		{"", "", ""},
		{"a", "A", "A"},
		{"e", "A", "A"},
		{"y", "A", "A"},
		{"b", "P", "P"},
		{"c", "K", "K"},
		{"h", "", ""}, // H not before a vowel is silent
		{"w", "", ""}, // W alone is silent
		{"x", "S", "S"},
		{"j", "J", "A"},
		{"z", "S", "S"},
		{"ç", "S", "S"},
		{"ñ", "N", "N"},
		{"é", "", ""}, // other non-ASCII letters code nothing
		{"Иван", "", ""},
		{"李", "", ""},
		{"محمد", "", ""},
		{"\xff\xfe", "", ""}, // invalid UTF-8
		{"O'Brien", "APRN", "APRN"},
		{"1234", "", ""},
	}
	for _, c := range cases {
		p, a := DoubleMetaphone(c.word)
		if p != c.primary || a != c.alternate {
			t.Errorf("DoubleMetaphone(%q) = %q, %q; want %q, %q", c.word, p, a, c.primary, c.alternate)
		}
	}
	// Every single ASCII byte must be safe and give valid codes.
	for b := 0; b < 128; b++ {
		p, a := DoubleMetaphone(string(rune(b)))
		checkCode(t, string(rune(b)), p)
		checkCode(t, string(rune(b)), a)
	}
}

func TestDoubleMetaphoneLongWords(t *testing.T) {
	// SCH before W: X only; W after initial SCH: F in the alternate;
	// Z in a Slavo-Germanic word (it has a W): S / TS.
	long := strings.Repeat("Schwarzenegger", 10000)
	p, a := DoubleMetaphone(long)
	if p != "XRSN" || a != "XFRT" {
		t.Errorf("DoubleMetaphone(long) = %q, %q", p, a)
	}
	// A long word without any coded letter is scanned to its end.
	p, a = DoubleMetaphone(strings.Repeat("aeiou", 100000))
	if p != "A" || a != "A" {
		t.Errorf("DoubleMetaphone(vowels) = %q, %q; want A, A", p, a)
	}
	p, a = DoubleMetaphone(strings.Repeat("é", 100000) + "x")
	if p != "KS" || a != "KS" {
		t.Errorf("DoubleMetaphone(é...x) = %q, %q; want KS, KS", p, a)
	}
	if v := VowelClass(strings.Repeat("x", 100000) + "ou"); v != "u" {
		t.Errorf("VowelClass(x...ou) = %q; want u", v)
	}
	if k := Keys(long); len(k) != 2 || k[0] != "XRSN/a" || k[1] != "XFRT/a" {
		t.Errorf("Keys(long) = %q", k)
	}
}

func checkCode(t *testing.T, word, code string) {
	t.Helper()
	if len(code) > 4 {
		t.Errorf("DoubleMetaphone(%q): code %q longer than 4", word, code)
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if (c < 'A' || c > 'Z') && c != '0' {
			t.Errorf("DoubleMetaphone(%q): code %q has invalid byte %q", word, code, c)
		}
	}
}

func FuzzDoubleMetaphone(f *testing.F) {
	for _, c := range dmCases {
		f.Add(c.word)
	}
	for _, s := range []string{"", " ", "     ", "VAN ", "SAN ", "IER ", "GH", "CC", "WICZ",
		"Ççññ", "Иван", "李小龍", "\xff", "mac c", "sch", "jose "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, word string) {
		p, a := DoubleMetaphone(word)
		checkCode(t, word, p)
		checkCode(t, word, a)
		keys := Keys(word)
		if p == "" && a == "" && keys != nil {
			t.Errorf("Keys(%q) = %q for empty codes", word, keys)
		}
		for _, k := range keys {
			if !strings.Contains(k, "/") {
				t.Errorf("Keys(%q): key %q has no '/'", word, k)
			}
		}
		switch v := VowelClass(word); v {
		case "", "a", "e", "i", "o", "u":
		default:
			t.Errorf("VowelClass(%q) = %q", word, v)
		}
	})
}
