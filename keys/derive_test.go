package keys

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func seqKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func TestColumnKeyKnownAnswer(t *testing.T) {
	// Also in testdata/vectors/field_v1.json, checked there by the Node verifier.
	got, err := ColumnKey(seqKey(), "public.patient", "full_name")
	if err != nil {
		t.Fatal(err)
	}
	const want = "9f1d8f8e10c4b28379fea195df05ed1aecee0b5a3220333adcb7206073875fd7"
	if hex.EncodeToString(got) != want {
		t.Fatalf("ColumnKey = %x, want %s", got, want)
	}
	info := "pgphi/v1/field\x00\x00\x00\x00\x0epublic.patient\x00\x00\x00\x09full_name"
	direct, err := hkdf.Key(sha256.New, seqKey(), nil, info, 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, direct) {
		t.Fatal("ColumnKey does not match HKDF with the documented info string")
	}
	d, _ := DeriveKey(seqKey(), PurposeField, "public.patient", "full_name")
	if !bytes.Equal(got, d) {
		t.Fatal("ColumnKey != DeriveKey(PurposeField, table, column)")
	}
}

func TestDeriveKeyDomainSeparation(t *testing.T) {
	root := seqKey()
	cases := []struct {
		p   Purpose
		ctx []string
	}{
		{PurposeField, nil},
		{PurposeField, []string{""}},
		{PurposeField, []string{"", ""}},
		{PurposeField, []string{"ab", "c"}},
		{PurposeField, []string{"a", "bc"}},
		{PurposeField, []string{"abc"}},
		{PurposeField, []string{"a", "b", "c"}},
		{PurposeField, []string{"ab", "c", ""}},
		{PurposeField, []string{"public.patient", "name"}},
		{PurposeField, []string{"public.patient.name"}},
		{PurposeField, []string{"public", "patient", "name"}},
		{PurposeBlindIndex, nil},
		{PurposeBlindIndex, []string{"ab", "c"}},
		{PurposeBlindIndex, []string{"public.patient", "name"}},
		{PurposeAudit, nil},
		{PurposeAudit, []string{"ab", "c"}},
		{Purpose("field-x"), nil},
		{Purpose("fiel"), []string{"d"}},
	}
	seen := map[string]int{}
	for i, c := range cases {
		k, err := DeriveKey(root, c.p, c.ctx...)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != KeySize {
			t.Fatalf("len = %d", len(k))
		}
		if j, dup := seen[string(k)]; dup {
			t.Errorf("case %d (%s %q) and case %d (%s %q) derive the same key", i, c.p, c.ctx, j, cases[j].p, cases[j].ctx)
		}
		seen[string(k)] = i
	}

	// Deterministic, and dependent on the root.
	a, _ := DeriveKey(root, PurposeField, "t", "c")
	b, _ := DeriveKey(root, PurposeField, "t", "c")
	if !bytes.Equal(a, b) {
		t.Fatal("not deterministic")
	}
	other := seqKey()
	other[31] ^= 1
	c, _ := DeriveKey(other, PurposeField, "t", "c")
	if bytes.Equal(a, c) {
		t.Fatal("root key ignored")
	}
	if bytes.Equal(a, root) {
		t.Fatal("derived key equals root")
	}
}

func TestDeriveKeyErrors(t *testing.T) {
	for name, f := range map[string]func() ([]byte, error){
		"short root":  func() ([]byte, error) { return DeriveKey(make([]byte, 31), PurposeField) },
		"long root":   func() ([]byte, error) { return DeriveKey(make([]byte, 33), PurposeField) },
		"nil root":    func() ([]byte, error) { return ColumnKey(nil, "t", "c") },
		"no purpose":  func() ([]byte, error) { return DeriveKey(seqKey(), "") },
		"NUL purpose": func() ([]byte, error) { return DeriveKey(seqKey(), "field\x00x") },
	} {
		if k, err := f(); err == nil || k != nil {
			t.Errorf("%s: no error", name)
		}
	}
}
