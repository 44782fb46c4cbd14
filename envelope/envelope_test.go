package envelope

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
)

func testKey(t testing.TB, seed byte) []byte {
	t.Helper()
	k := make([]byte, ColumnKeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func testSealer(t testing.TB, id KeyID, key []byte) *Sealer {
	t.Helper()
	s, err := NewSealer(id, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// raceEnabled is set by race_test.go: the race detector randomly drops
// sync.Pool entries.
var raceEnabled bool

var testBinding = Binding{Table: "public.patient", Column: "full_name", PrimaryKey: []string{"42"}}

var allTypeValues = []Value{
	{TypeText, "Zoë O'Brien — 山田太郎 🩺"},
	{TypeText, ""},
	{TypeInteger, "-9223372036854775808"},
	{TypeNumeric, "12345.6700"},
	{TypeNumeric, "NaN"},
	{TypeBoolean, "true"},
	{TypeBoolean, "false"},
	{TypeDate, "2024-02-29"},
	{TypeTimestamp, "2024-02-29 13:45:30.5"},
	{TypeTimestampTZ, "2024-02-29 13:45:30.123456+00"},
	{TypeJSON, `{"b":1,  "a" : [1,2]}`},
	{TypeJSONB, `{"a": {"b": [1, 2, {"c": null}]}, "name": "Zoë"}`},
	{TypeBytea, `\x00ff10`},
	{TypeOther, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	{TypeText, strings.Repeat("long value ", 1000)},
}

func TestRoundTripAllTypes(t *testing.T) {
	key := testKey(t, 1)
	s := testSealer(t, 7, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{7: key}))
	for _, v := range allTypeValues {
		ct, err := s.Seal(nil, v, testBinding)
		if err != nil {
			t.Fatalf("Seal(%v): %v", v.Type, err)
		}
		if got, want := len(ct), len(v.Text)+1+Overhead; got != want {
			t.Errorf("len(ct) = %d, want %d", got, want)
		}
		if ct[0] != Version1 || !bytes.Equal(ct[1:5], []byte{0, 0, 0, 7}) {
			t.Errorf("bad header % x", ct[:5])
		}
		if bytes.Contains(ct, []byte(v.Text)) && len(v.Text) > 4 {
			t.Errorf("ciphertext contains plaintext")
		}
		got, err := o.Open(ct, testBinding)
		if err != nil {
			t.Fatalf("Open(%v): %v", v.Type, err)
		}
		if got != v {
			t.Errorf("round trip: got %v %q, want %v %q", got.Type, got.Text, v.Type, v.Text)
		}
	}
}

func TestSealRandomNonce(t *testing.T) {
	s := testSealer(t, 1, testKey(t, 1))
	v := Value{TypeText, "same"}
	a, _ := s.Seal(nil, v, testBinding)
	b, _ := s.Seal(nil, v, testBinding)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same value are identical")
	}
}

func TestSealAppends(t *testing.T) {
	key := testKey(t, 3)
	s := testSealer(t, 9, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{9: key}))
	prefix := []byte("prefix")
	for _, dst := range [][]byte{
		bytes.Clone(prefix),                              // must grow
		append(make([]byte, 0, 200), prefix...),          // has room
		append(make([]byte, 0, 6+Overhead+5), prefix...), // exactly enough room
	} {
		v := Value{TypeText, "abcd"}
		out, err := s.Seal(dst, v, testBinding)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out[:len(prefix)], prefix) {
			t.Fatal("Seal clobbered dst")
		}
		got, err := o.Open(out[len(prefix):], testBinding)
		if err != nil || got != v {
			t.Fatalf("Open = %v, %v", got, err)
		}
	}
}

func TestSealAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are unreliable in short and race mode")
	}
	s := testSealer(t, 1, testKey(t, 1))
	v := Value{TypeText, strings.Repeat("x", 64)}
	b := Binding{Table: "public.patient", Column: "notes", PrimaryKey: []string{"12345", "2024-01-01"}}
	dst := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		dst, err = s.Seal(dst[:0], v, b)
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("Seal with spare capacity allocates %v times per call, want 0", allocs)
	}
}

func TestTamperEveryBit(t *testing.T) {
	key := testKey(t, 5)
	s := testSealer(t, 0x01020304, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{0x01020304: key}))
	ct, err := s.Seal(nil, Value{TypeText, "Jane Doe"}, testBinding)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for bit := 0; bit < 8; bit++ {
			bad := bytes.Clone(ct)
			bad[i] ^= 1 << bit
			if v, err := o.Open(bad, testBinding); err == nil {
				t.Fatalf("flip byte %d bit %d: Open succeeded with %v", i, bit, v)
			}
		}
	}
	for n := 0; n < len(ct); n++ {
		if _, err := o.Open(ct[:n], testBinding); err == nil {
			t.Fatalf("truncated to %d bytes: Open succeeded", n)
		}
	}
	if _, err := o.Open(append(bytes.Clone(ct), 0), testBinding); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("extended: err = %v, want ErrDecrypt", err)
	}
}

func TestBindingSwap(t *testing.T) {
	key := testKey(t, 7)
	s := testSealer(t, 1, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{1: key}))
	orig := Binding{Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"42", "7"}}
	ct, err := s.Seal(nil, Value{TypeText, "J45.909"}, orig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(ct, orig); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]Binding{
		"other row":        {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"42", "8"}},
		"pk order":         {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"7", "42"}},
		"pk split":         {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"427"}},
		"pk split 2":       {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"4", "27"}},
		"pk extra":         {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"42", "7", ""}},
		"pk missing":       {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"42"}},
		"pk none":          {Table: "clinic.visit", Column: "diagnosis"},
		"other column":     {Table: "clinic.visit", Column: "notes", PrimaryKey: []string{"42", "7"}},
		"other table":      {Table: "clinic.visit_archive", Column: "diagnosis", PrimaryKey: []string{"42", "7"}},
		"other schema":     {Table: "public.visit", Column: "diagnosis", PrimaryKey: []string{"42", "7"}},
		"table/col split":  {Table: "clinic.visitd", Column: "iagnosis", PrimaryKey: []string{"42", "7"}},
		"col/pk split":     {Table: "clinic.visit", Column: "diagnosis4", PrimaryKey: []string{"2", "7"}},
		"case differs":     {Table: "clinic.Visit", Column: "diagnosis", PrimaryKey: []string{"42", "7"}},
		"whitespace in pk": {Table: "clinic.visit", Column: "diagnosis", PrimaryKey: []string{"42 ", "7"}},
	} {
		if _, err := o.Open(ct, b); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", name, err)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	k1, k2 := testKey(t, 1), testKey(t, 100)
	s1, s2 := testSealer(t, 1, k1), testSealer(t, 2, k2)
	if s1.KeyID() != 1 || s2.KeyID() != 2 {
		t.Fatal("KeyID")
	}
	calls := 0
	o := NewOpener(func(id KeyID) ([]byte, error) {
		calls++
		return StaticKeys(map[KeyID][]byte{1: k1, 2: k2})(id)
	})
	for i, s := range []*Sealer{s1, s2, s1, s2} {
		v := Value{TypeInteger, "12"}
		ct, _ := s.Seal(nil, v, testBinding)
		got, err := o.Open(ct, testBinding)
		if err != nil || got != v {
			t.Fatalf("%d: Open = %v, %v", i, got, err)
		}
	}
	if calls != 2 {
		t.Errorf("lookup called %d times, want 2 (cached)", calls)
	}

	// A ciphertext under an unknown key id.
	s3 := testSealer(t, 0xdeadbeef, k1)
	ct, _ := s3.Seal(nil, Value{TypeText, "secret-value"}, testBinding)
	_, err := o.Open(ct, testBinding)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key id: err = %v, want ErrUnknownKey", err)
	}
	if !strings.Contains(err.Error(), "3735928559") {
		t.Errorf("error %q does not name the key id", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error leaks data: %q", err)
	}

	// Same key bytes under a different key id do not open: the id is authenticated.
	s4 := testSealer(t, 2, k1)
	ct, _ = s4.Seal(nil, Value{TypeText, "x"}, testBinding)
	if _, err := o.Open(ct, testBinding); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: err = %v, want ErrDecrypt", err)
	}

	// Lookup returning a bad key.
	o2 := NewOpener(func(KeyID) ([]byte, error) { return make([]byte, 16), nil })
	if _, err := o2.Open(ct, testBinding); err == nil || errors.Is(err, ErrDecrypt) {
		t.Fatalf("short key: err = %v", err)
	}
}

func TestOpenMalformed(t *testing.T) {
	key := testKey(t, 1)
	s := testSealer(t, 1, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{1: key}))
	good, _ := s.Seal(nil, Value{TypeText, "x"}, testBinding)

	v2 := bytes.Clone(good)
	v2[0] = 0x02
	for name, ct := range map[string][]byte{
		"nil":             nil,
		"version only":    {Version1},
		"header only":     good[:5],
		"overhead only":   good[:Overhead],
		"unknown version": v2,
		"version zero":    append([]byte{0}, good[1:]...),
	} {
		if _, err := o.Open(ct, testBinding); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}

	// Authentic ciphertexts with invalid plaintexts.
	for name, pt := range map[string]struct {
		typ  byte
		text string
	}{
		"type zero":    {0x00, "x"},
		"type 11":      {11, "x"},
		"type 0xff":    {0xff, "x"},
		"invalid utf8": {byte(TypeText), "\xff\xfe"},
	} {
		ct := s.seal(nil, pt.typ, pt.text, testBinding)
		if _, err := o.Open(ct, testBinding); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
	// An authentic empty plaintext (no type byte) cannot be produced by seal;
	// it is rejected by length before decryption.
	if _, err := o.Open(good[:MinCiphertextSize-1], testBinding); !errors.Is(err, ErrFormat) {
		t.Errorf("short: err = %v", err)
	}
}

func TestSealRejects(t *testing.T) {
	if _, err := NewSealer(1, make([]byte, 16)); err == nil {
		t.Error("NewSealer accepted a 16-byte key")
	}
	if _, err := NewSealer(1, nil); err == nil {
		t.Error("NewSealer accepted a nil key")
	}
	s := testSealer(t, 1, testKey(t, 1))
	for name, tc := range map[string]struct {
		v Value
		b Binding
	}{
		"type 0":       {Value{0, "x"}, testBinding},
		"type 11":      {Value{11, "x"}, testBinding},
		"invalid utf8": {Value{TypeText, "a\xc3"}, testBinding},
		"no table":     {Value{TypeText, "x"}, Binding{Column: "c", PrimaryKey: []string{"1"}}},
		"no column":    {Value{TypeText, "x"}, Binding{Table: "public.t", PrimaryKey: []string{"1"}}},
		"too many pks": {Value{TypeText, "x"}, Binding{Table: "public.t", Column: "c", PrimaryKey: make([]string, 65536)}},
	} {
		if ct, err := s.Seal(nil, tc.v, tc.b); err == nil || ct != nil {
			t.Errorf("%s: Seal succeeded", name)
		}
	}
	o := NewOpener(StaticKeys(map[KeyID][]byte{1: testKey(t, 1)}))
	ct, _ := s.Seal(nil, Value{TypeText, "x"}, testBinding)
	if _, err := o.Open(ct, Binding{Column: "c"}); err == nil {
		t.Error("Open accepted an empty table")
	}
}

func TestErrorsDoNotLeak(t *testing.T) {
	key := testKey(t, 1)
	s := testSealer(t, 1, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{1: testKey(t, 2)}))
	b := Binding{Table: "public.patient", Column: "ssn", PrimaryKey: []string{"MRN-0042"}}
	ct, _ := s.Seal(nil, Value{TypeText, "078-05-1120"}, b)
	_, err := o.Open(ct, b)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v", err)
	}
	for _, secret := range []string{"078-05-1120", "MRN-0042", "patient", "ssn", hex.EncodeToString(key)} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q leaks %q", err, secret)
		}
	}
	if _, err := s.Seal(nil, Value{TypeText, "078-05-1120\xff"}, b); err == nil || strings.Contains(err.Error(), "078") {
		t.Errorf("Seal error leaks data: %v", err)
	}
}

func TestParseHeader(t *testing.T) {
	s := testSealer(t, 0xcafebabe, testKey(t, 1))
	ct, _ := s.Seal(nil, Value{TypeText, ""}, testBinding)
	if len(ct) != MinCiphertextSize {
		t.Fatalf("len = %d, want %d", len(ct), MinCiphertextSize)
	}
	v, id, err := ParseHeader(ct)
	if err != nil || v != Version1 || id != 0xcafebabe {
		t.Fatalf("ParseHeader = %d, %x, %v", v, id, err)
	}
	ct[0] = 9
	if v, _, err := ParseHeader(ct); !errors.Is(err, ErrFormat) || v != 9 {
		t.Fatalf("unknown version: %d, %v", v, err)
	}
	if _, _, err := ParseHeader(nil); !errors.Is(err, ErrFormat) {
		t.Fatal(err)
	}
}

func TestAppendAAD(t *testing.T) {
	got := AppendAAD([]byte("x"), Version1, 0x01020304, Binding{Table: "public.t", Column: "c", PrimaryKey: []string{"1", ""}})
	want := []byte("x" + "pgphi-field" + "\x01" + "\x01\x02\x03\x04" +
		"\x00\x00\x00\x08public.t" + "\x00\x00\x00\x01c" + "\x00\x02" +
		"\x00\x00\x00\x011" + "\x00\x00\x00\x00")
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendAAD =\n% x\nwant\n% x", got, want)
	}
}

func TestConcurrent(t *testing.T) {
	k1, k2 := testKey(t, 1), testKey(t, 2)
	s1, s2 := testSealer(t, 1, k1), testSealer(t, 2, k2)
	o := NewOpener(StaticKeys(map[KeyID][]byte{1: k1, 2: k2}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			s := s1
			if g%2 == 1 {
				s = s2
			}
			var dst []byte
			for i := range 200 {
				b := Binding{Table: "public.t", Column: "c", PrimaryKey: []string{strings.Repeat("k", i)}}
				v := Value{TypeText, rand.Text()}
				var err error
				dst, err = s.Seal(dst[:0], v, b)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := o.Open(dst, b)
				if err != nil || got != v {
					t.Errorf("Open = %v, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestTypeForPostgres(t *testing.T) {
	for in, want := range map[string]ValueType{
		"text":                           TypeText,
		"character varying":              TypeText,
		"character varying(255)":         TypeText,
		"varchar(64)":                    TypeText,
		"character(10)":                  TypeText,
		"bpchar":                         TypeText,
		"TEXT":                           TypeText,
		"pg_catalog.text":                TypeText,
		"integer":                        TypeInteger,
		"int4":                           TypeInteger,
		"bigint":                         TypeInteger,
		"int8":                           TypeInteger,
		"smallint":                       TypeInteger,
		"int2":                           TypeInteger,
		"numeric":                        TypeNumeric,
		"numeric(10,2)":                  TypeNumeric,
		"numeric(10, 2)":                 TypeNumeric,
		"boolean":                        TypeBoolean,
		"bool":                           TypeBoolean,
		"date":                           TypeDate,
		"timestamp without time zone":    TypeTimestamp,
		"timestamp(3) without time zone": TypeTimestamp,
		"timestamp":                      TypeTimestamp,
		"timestamp with time zone":       TypeTimestampTZ,
		"timestamp(6) with time zone":    TypeTimestampTZ,
		"  timestamp   with time zone ":  TypeTimestampTZ,
		"timestamptz":                    TypeTimestampTZ,
		"json":                           TypeJSON,
		"jsonb":                          TypeJSONB,
		"bytea":                          TypeBytea,
		"uuid":                           TypeOther,
		"integer[]":                      TypeOther,
		"text[]":                         TypeOther,
		"_int4":                          TypeOther,
		"double precision":               TypeOther,
		"real":                           TypeOther,
		"interval":                       TypeOther,
		"time without time zone":         TypeOther,
		"inet":                           TypeOther,
		`"char"`:                         TypeOther,
		"public.mood":                    TypeOther,
		"":                               TypeOther,
	} {
		if got := TypeForPostgres(in); got != want {
			t.Errorf("TypeForPostgres(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestValueTypeString(t *testing.T) {
	seen := map[string]bool{}
	for _, typ := range []ValueType{TypeText, TypeInteger, TypeNumeric, TypeBoolean, TypeDate, TypeTimestamp,
		TypeTimestampTZ, TypeJSON, TypeJSONB, TypeBytea, TypeOther} {
		s := typ.String()
		if seen[s] || strings.HasPrefix(s, "ValueType") {
			t.Errorf("bad name %q for %d", s, typ)
		}
		seen[s] = true
	}
	if got := ValueType(0x42).String(); got != "ValueType(0x42)" {
		t.Errorf("String = %q", got)
	}
}

func BenchmarkSeal(b *testing.B) {
	s := testSealer(b, 1, testKey(b, 1))
	v := Value{TypeText, strings.Repeat("x", 64)}
	bind := Binding{Table: "public.patient", Column: "notes", PrimaryKey: []string{"1234567"}}
	dst := make([]byte, 0, 128)
	b.SetBytes(int64(len(v.Text)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = s.Seal(dst[:0], v, bind)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	key := testKey(b, 1)
	s := testSealer(b, 1, key)
	o := NewOpener(StaticKeys(map[KeyID][]byte{1: key}))
	v := Value{TypeText, strings.Repeat("x", 64)}
	bind := Binding{Table: "public.patient", Column: "notes", PrimaryKey: []string{"1234567"}}
	ct, _ := s.Seal(nil, v, bind)
	b.SetBytes(int64(len(v.Text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.Open(ct, bind); err != nil {
			b.Fatal(err)
		}
	}
}
