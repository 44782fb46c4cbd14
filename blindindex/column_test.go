package blindindex

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKeys derives a distinct key per sub-kind from a seed (standing in for
// the HKDF per table, column and sub-kind done by the caller).
func testKeys(seed string, subs []SubKind) map[SubKind][]byte {
	m := map[SubKind][]byte{}
	for _, s := range subs {
		k := sha256.Sum256([]byte(seed + "\x00" + string(s)))
		m[s] = k[:]
	}
	return m
}

func testBits(subs []SubKind, bits int) map[SubKind]int {
	m := map[SubKind]int{}
	for _, s := range subs {
		m[s] = bits
	}
	return m
}

func newTestColumn(t testing.TB, seed string, kinds []Kind, o Options, bits int) *Column {
	t.Helper()
	subs := SubKinds(kinds, o)
	c, err := NewColumn(kinds, o, testKeys(seed, subs), testBits(subs, bits))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var allKinds = []Kind{Exact, Prefix, Contains, Phonetic, Phone, Date}

func TestSubKindsAndTags(t *testing.T) {
	got := SubKinds([]Kind{Date, Phone, Exact, Prefix, Contains, Phonetic, Exact}, Defaults())
	want := []SubKind{SubExact, SubPrefix3, SubPrefix4, SubPrefix5, SubContains, SubPhonetic,
		SubPhoneE164, SubPhoneLast4, SubPhoneArea, SubDate, SubYear, SubYearMonth}
	if !slices.Equal(got, want) {
		t.Fatalf("SubKinds = %v, want %v", got, want)
	}
	wantTags := []byte{0x01, 0x13, 0x14, 0x15, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09}
	for i, s := range want {
		if Tag(s) != wantTags[i] {
			t.Errorf("Tag(%s) = %#x, want %#x", s, Tag(s), wantTags[i])
		}
	}
	o := Defaults()
	o.PrefixMin, o.PrefixMax = 2, 12
	subs := SubKinds([]Kind{Prefix}, o)
	if len(subs) != 11 || subs[0] != "prefix/2" || subs[10] != "prefix/12" || Tag("prefix/12") != 0x1c {
		t.Fatalf("prefix sub-kinds %v", subs)
	}
	for _, bad := range []SubKind{"prefix/0", "prefix/33", "prefix/03", "prefix/x", "nope", ""} {
		if Tag(bad) != 0 {
			t.Errorf("Tag(%q) = %#x, want 0", bad, Tag(bad))
		}
	}
}

func TestTermEncoding(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	for _, bits := range []int{1, 8, 20, 55, 56} {
		c, err := NewColumn([]Kind{Exact}, Defaults(), map[SubKind][]byte{SubExact: key}, map[SubKind]int{SubExact: bits})
		if err != nil {
			t.Fatal(err)
		}
		terms := c.Terms(nil, "  José  GARCÍA ")
		m := hmac.New(sha256.New, key)
		m.Write([]byte("jose garcia"))
		sum := m.Sum(nil)
		v := binary.BigEndian.Uint64(append([]byte{0}, sum[:7]...)) >> (56 - bits)
		want := int64(0x01<<56 | v)
		if len(terms) != 1 || terms[0] != want {
			t.Fatalf("bits %d: terms %x, want %x", bits, terms, want)
		}
		if terms[0] < 0 || byte(uint64(terms[0])>>56) != 0x01 || uint64(terms[0])&(1<<56-1) >= 1<<bits {
			t.Fatalf("bits %d: term %x out of range", bits, terms[0])
		}
	}
}

// TestVector is the example of docs/SEARCH.md.
func TestVector(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	c, err := NewColumn([]Kind{Exact}, Defaults(), map[SubKind][]byte{SubExact: key}, map[SubKind]int{SubExact: 20})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%#x %d", c.Terms(nil, "  José  GARCÍA ")[0], c.Terms(nil, "  José  GARCÍA ")[0])
	if want := "0x1000000000f7897 72057594038941847"; got != want {
		t.Fatalf("vector: got %s, want %s", got, want)
	}
	// prefix/4 of "Ｏ’Brien" (full-width O, typographic apostrophe) is "o'br".
	for i := range key {
		key[i] = byte(0x20 + i)
	}
	o := Defaults()
	o.PrefixMin, o.PrefixMax = 4, 4
	c, err = NewColumn([]Kind{Prefix}, o, map[SubKind][]byte{SubPrefix4: key}, map[SubKind]int{SubPrefix4: 24})
	if err != nil {
		t.Fatal(err)
	}
	got = fmt.Sprintf("%#x %d", c.Terms(nil, "Ｏ’Brien")[0], c.Terms(nil, "Ｏ’Brien")[0])
	if want := "0x1400000000487d35 1441151880763309365"; got != want {
		t.Fatalf("vector: got %s, want %s", got, want)
	}
}

func TestFoldAccentsOff(t *testing.T) {
	o := Defaults()
	o.FoldAccents = false
	c := newTestColumn(t, "k", []Kind{Exact, Prefix, Phonetic}, o, 56)
	p, err := c.Query(Query{Kind: QExact, Value: "JOSÉ"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Match("josé") || p.Match("Jose") || !p.Candidate(c.Terms(nil, "Jose\u0301")) || p.Candidate(c.Terms(nil, "Jose")) {
		t.Fatal("exact without accent folding")
	}
	// Phonetic search always folds accents.
	p, err = c.Query(Query{Kind: QPhonetic, Value: "Jose"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Match("José García") || !p.Candidate(c.Terms(nil, "José García")) {
		t.Fatal("phonetic must fold accents")
	}
}

func TestTermsDomainSeparation(t *testing.T) {
	a := newTestColumn(t, "public.patient/name", allKinds, Defaults(), 56)
	b := newTestColumn(t, "public.patient/other", allKinds, Defaults(), 56)
	// The same message in every sub-kind gives a different term.
	seen := map[int64]SubKind{}
	for _, s := range a.SubKinds() {
		for _, col := range []*Column{a, b} {
			tm := col.Term(s, []byte("2024"))
			if prev, dup := seen[tm]; dup {
				t.Fatalf("term of %s equals term of %s", s, prev)
			}
			seen[tm] = s
		}
	}
	// Identical values give identical terms; other columns' keys give disjoint terms.
	for _, v := range []string{"John Smith", "+1 415 555 2671", "1980-02-29", "李小龙"} {
		t1, t2, t3 := a.Terms(nil, v), a.Terms(nil, v), b.Terms(nil, v)
		if !slices.Equal(t1, t2) || len(t1) == 0 {
			t.Fatalf("%q: terms not deterministic", v)
		}
		for _, x := range t3 {
			if slices.Contains(t1, x) {
				t.Fatalf("%q: a term is shared across columns", v)
			}
		}
	}
}

func TestTermsShape(t *testing.T) {
	c := newTestColumn(t, "k", allKinds, Defaults(), 8)
	dst := []int64{-5, 99}
	out := c.Terms(dst, "Anna Anna Annabelle")
	if out[0] != -5 || out[1] != 99 {
		t.Fatal("dst prefix modified")
	}
	tail := out[2:]
	if !slices.IsSorted(tail) || len(slices.Compact(slices.Clone(tail))) != len(tail) {
		t.Fatalf("terms not sorted and unique: %v", tail)
	}
	// Nothing for values that yield nothing.
	for _, v := range []string{"", "  ", "\u3000"} {
		if got := c.Terms(nil, v); len(got) != 0 {
			t.Errorf("Terms(%q) = %v, want none", v, got)
		}
	}
	d := newTestColumn(t, "k", []Kind{Date}, Defaults(), 8)
	for _, v := range []string{"infinity", "-infinity", "2000-01-01 BC", "2000-02-30", "20000-01-01", "2000-1-1", "x"} {
		if got := d.Terms(nil, v); len(got) != 0 {
			t.Errorf("date Terms(%q) = %v, want none", v, got)
		}
	}
	for _, v := range []string{"2000-01-01", "2000-01-01 12:00:00", "2000-01-01 23:59:59.5+00", "2000-01-01T00:00:00"} {
		if got := d.Terms(nil, v); len(got) != 3 {
			t.Errorf("date Terms(%q) = %v, want 3 terms", v, got)
		}
	}
	short := newTestColumn(t, "k", []Kind{Prefix, Contains}, Defaults(), 8)
	if got := short.Terms(nil, "Al"); len(got) != 0 {
		t.Errorf("Terms(Al) = %v: shorter than PrefixMin and TokenSize", got)
	}
	if got := short.Terms(nil, "Ali"); len(got) != 2 {
		t.Errorf("Terms(Ali) = %v: want prefix/3 and one trigram", got)
	}
}

func TestNewColumnErrors(t *testing.T) {
	subs := SubKinds([]Kind{Exact, Date}, Defaults())
	keys, bits := testKeys("x", subs), testBits(subs, 16)
	if _, err := NewColumn([]Kind{Exact, Date}, Defaults(), keys, bits); err != nil {
		t.Fatal(err)
	}
	shared := testKeys("x", subs)
	shared[SubYear] = shared[SubDate]
	bad := map[string]func() error{
		"no kinds":     func() error { _, err := NewColumn(nil, Defaults(), keys, bits); return err },
		"unknown kind": func() error { _, err := NewColumn([]Kind{"soundex"}, Defaults(), keys, bits); return err },
		"twice":        func() error { _, err := NewColumn([]Kind{Exact, Exact}, Defaults(), keys, bits); return err },
		"missing key":  func() error { _, err := NewColumn([]Kind{Exact, Phone}, Defaults(), keys, bits); return err },
		"shared key":   func() error { _, err := NewColumn([]Kind{Exact, Date}, Defaults(), shared, bits); return err },
		"short key": func() error {
			k := testKeys("x", subs)
			k[SubExact] = k[SubExact][:16]
			_, err := NewColumn([]Kind{Exact}, Defaults(), k, bits)
			return err
		},
		"bits -1": func() error {
			_, err := NewColumn([]Kind{Exact}, Defaults(), keys, map[SubKind]int{SubExact: -1})
			return err
		},
		"bits 57": func() error {
			_, err := NewColumn([]Kind{Exact}, Defaults(), keys, map[SubKind]int{SubExact: 57})
			return err
		},
		"region": func() error {
			o := Defaults()
			o.PhoneRegion = "XX"
			_, err := NewColumn([]Kind{Exact}, o, keys, bits)
			return err
		},
		"prefix": func() error {
			o := Defaults()
			o.PrefixMin, o.PrefixMax = 5, 3
			_, err := NewColumn([]Kind{Exact}, o, keys, bits)
			return err
		},
		"token": func() error {
			o := Defaults()
			o.TokenSize = 1
			_, err := NewColumn([]Kind{Exact}, o, keys, bits)
			return err
		},
	}
	for name, f := range bad {
		if f() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestQueryErrorsHideValue(t *testing.T) {
	c := newTestColumn(t, "k", allKinds, Defaults(), 16)
	exactOnly := newTestColumn(t, "k", []Kind{Exact}, Defaults(), 16)
	const secret = "Zq"
	cases := []struct {
		c    *Column
		q    Query
		want error
	}{
		{exactOnly, Query{Kind: QPrefix, Value: secret + "Secret"}, ErrNotConfigured},
		{exactOnly, Query{Kind: QAgeBetween, MaxAge: 3}, ErrNotConfigured},
		{c, Query{Kind: "soundex", Value: secret}, ErrInvalidQuery},
		{c, Query{Kind: QExact, Value: " \t "}, ErrInvalidQuery},
		{c, Query{Kind: QPrefix, Value: secret}, ErrInvalidQuery},
		{c, Query{Kind: QContains, Value: secret}, ErrInvalidQuery},
		{c, Query{Kind: QPhonetic, Value: "李小龙" + secret[:0]}, ErrInvalidQuery},
		{c, Query{Kind: QPhonetic, Value: "Zqx 李小龙"}, ErrInvalidQuery},
		{c, Query{Kind: QPhone, Value: "Zq-12"}, ErrInvalidQuery},
		{c, Query{Kind: QLast4, Value: "12345"}, ErrInvalidQuery},
		{c, Query{Kind: QLast4, Value: "12a4"}, ErrInvalidQuery},
		{c, Query{Kind: QAreaCode, Value: "Zq 415"}, ErrInvalidQuery},
		{c, Query{Kind: QAreaCode, Value: "+999 1"}, ErrInvalidQuery},
		{c, Query{Kind: QDate, Value: "1980-02-30"}, ErrInvalidQuery},
		{c, Query{Kind: QDate, Value: "02/03/1980"}, ErrInvalidQuery},
		{c, Query{Kind: QYear, Value: "80"}, ErrInvalidQuery},
		{c, Query{Kind: QYearMonth, Value: "1980-13"}, ErrInvalidQuery},
		{c, Query{Kind: QAgeBetween, MinAge: 5, MaxAge: 4}, ErrInvalidQuery},
		{c, Query{Kind: QAgeBetween, MinAge: -1, MaxAge: 4}, ErrInvalidQuery},
		{c, Query{Kind: QAgeBetween, MinAge: 1, MaxAge: 201}, ErrInvalidQuery},
	}
	for _, tc := range cases {
		_, err := tc.c.Query(tc.q)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s %q: err %v, want %v", tc.q.Kind, tc.q.Value, err, tc.want)
			continue
		}
		if v := strings.TrimSpace(tc.q.Value); v != "" && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(v)) ||
			strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains the query value", err)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c := newTestColumn(t, "k", allKinds, Defaults(), 12)
	want := c.Terms(nil, "Zoë O'Brien +44 20 7946 0958 2000-02-29")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := c.Terms(nil, "Zoë O'Brien +44 20 7946 0958 2000-02-29"); !slices.Equal(got, want) {
					t.Error("concurrent Terms differ")
					return
				}
				p, err := c.Query(Query{Kind: QAgeBetween, MinAge: 20, MaxAge: 30, Today: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)})
				if err != nil || p.Match("2000-02-29") != true {
					t.Error("concurrent Query failed")
					return
				}
			}
		})
	}
	wg.Wait()
}
