package unique_test

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/pgphi/pgphi/keys"
	"github.com/pgphi/pgphi/unique"
)

func ptr(s string) *string { return &s }

// The vectors of docs/FORMAT.md §5, computed from the document with
// Python's hmac and hashlib (not with this package).
func TestVectors(t *testing.T) {
	root := make([]byte, 32)
	for i := range root {
		root[i] = byte(i)
	}
	key, err := keys.DeriveKey(root, keys.PurposeUnique, "public.patient", "mrn_uniq")
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(key); got != "17d439f37b0fc3fba773a048b6f034156cf3366f634516f03c225b6df647ce76" {
		t.Fatalf("digest key %s", got)
	}
	for _, v := range []struct {
		members       []*string
		nullsDistinct bool
		want          string
	}{
		{[]*string{ptr("MRN-0001")}, true, "675b6247df89a632897f81684cbc3239c183ecd25ca8ba187f8799e4497bf52f"},
		{[]*string{ptr("reason 3"), ptr("C3")}, true, "31732bf3a1a7d42f8166146afeba8bbad67017b70b9cbaaa9c4f72ff4360d60a"},
		{[]*string{ptr("reason 3"), nil}, false, "a1a9d7e23cfdf0fc23703b0935b7f35ee1b9f6c4543518d7b4594bb5851247df"},
		{[]*string{ptr("reason 3"), nil}, true, ""},
	} {
		got := hex.EncodeToString(unique.Digest(key, v.nullsDistinct, v.members))
		if got != v.want {
			t.Errorf("digest of %d members (nulls distinct %v): %s, want %s", len(v.members), v.nullsDistinct, got, v.want)
		}
	}
}

// The tuple encoding is injective: moving bytes between members, or a NULL
// for an empty string, changes the digest.
func TestTupleEncodingIsInjective(t *testing.T) {
	key := make([]byte, 32)
	seen := map[string]string{}
	for name, m := range map[string][]*string{
		"ab|c": {ptr("ab"), ptr("c")}, "a|bc": {ptr("a"), ptr("bc")}, "abc": {ptr("abc")},
		"empty|c": {ptr(""), ptr("c")}, "null|c": {nil, ptr("c")},
	} {
		d := hex.EncodeToString(unique.Digest(key, false, m))
		if other, dup := seen[d]; dup {
			t.Fatalf("%s and %s share a digest", name, other)
		}
		seen[d] = name
	}
}

// Equality text follows the type's equality, not the search normalization.
func TestEqualityText(t *testing.T) {
	for _, c := range []struct{ typ, a, b string }{
		{"numeric", "1.50", "1.5"},
		{"numeric", "2.000", "2"},
		{"character", "ab  ", "ab"},
	} {
		if unique.EqualityText(c.typ, c.a) != unique.EqualityText(c.typ, c.b) {
			t.Errorf("%s: %q and %q are equal but have other equality texts", c.typ, c.a, c.b)
		}
	}
	for _, c := range []struct{ typ, a, b string }{
		{"text", "Smith", "SMITH"},
		{"text", "a@x.org", "a@x.org "},
		{"numeric", "10", "1"},
		{"numeric", "100", "1"},
	} {
		if unique.EqualityText(c.typ, c.a) == unique.EqualityText(c.typ, c.b) {
			t.Errorf("%s: %q and %q differ but share an equality text", c.typ, c.a, c.b)
		}
	}
	for _, typ := range []string{"double precision", "real", "interval", "json", "citext"} {
		if err := unique.Supported(typ); !errors.Is(err, unique.ErrType) {
			t.Errorf("%s accepted: %v", typ, err)
		}
	}
}
