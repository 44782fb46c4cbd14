package blindindex

import (
	"encoding/json"
	"fmt"
	"strings"
)

// FormatVersion is the version of the term format this package computes
// (docs/SEARCH.md: keys, tags, truncation, normalization and messages of
// every sub-kind). pgphi records it with each term family in
// pgphi.blind_indexes.format_version. Terms of one version never change
// for the same key, options and bits; a change of any of them is a new
// version.
const FormatVersion = 1

// StoredOptions is the documented, stable form of a column's Options, as
// recorded in the jsonb column pgphi.blind_indexes.options (the same object
// on every sub-kind row of a column) when the column is first indexed.
// Defaults are filled in, so the object alone determines the terms: an
// independent implementation reads it instead of guessing defaults.
//
//	{"prefix_min": 3, "prefix_max": 5, "token_size": 3,
//	 "fold_accents": true, "phone_region": "US"}
//
// prefix_min and prefix_max are the indexed prefix lengths in code points
// (prefix kind), token_size the n-gram length in code points (contains
// kind), fold_accents whether exact, prefix and contains normalize with
// accent folding (phonetic always folds), and phone_region the ISO 3166
// alpha-2 region of phone numbers written without a country code ("" =
// none). Date terms have no options. Keys are never renamed; new keys may
// be added with a default that reproduces the terms of older rows.
type StoredOptions struct {
	PrefixMin   int    `json:"prefix_min"`
	PrefixMax   int    `json:"prefix_max"`
	TokenSize   int    `json:"token_size"`
	FoldAccents bool   `json:"fold_accents"`
	PhoneRegion string `json:"phone_region"`
}

// Stored returns the stored form of o, with defaults filled in and the
// region upper-cased (as NewColumn uses them).
func (o Options) Stored() StoredOptions {
	o = o.withDefaults()
	return StoredOptions{PrefixMin: o.PrefixMin, PrefixMax: o.PrefixMax, TokenSize: o.TokenSize, FoldAccents: o.FoldAccents, PhoneRegion: o.PhoneRegion}
}

// JSON returns the canonical JSON object of s (keys in the order above).
func (s StoredOptions) JSON() []byte {
	b, _ := json.Marshal(s)
	return b
}

// ParseStoredOptions reads a stored options object. Every key must be
// present and valid; unknown keys are refused (they would mean terms this
// version cannot compute).
func ParseStoredOptions(b []byte) (StoredOptions, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return StoredOptions{}, fmt.Errorf("blindindex: stored options: %w", err)
	}
	for _, k := range []string{"prefix_min", "prefix_max", "token_size", "fold_accents", "phone_region"} {
		if _, ok := raw[k]; !ok {
			return StoredOptions{}, fmt.Errorf("blindindex: stored options lack %q", k)
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var s StoredOptions
	if err := dec.Decode(&s); err != nil {
		return StoredOptions{}, fmt.Errorf("blindindex: stored options: %w", err)
	}
	o := s.Options()
	if err := o.validate(); err != nil {
		return StoredOptions{}, err
	}
	if o.Stored() != s {
		return StoredOptions{}, fmt.Errorf("blindindex: stored options are not in canonical form")
	}
	return s, nil
}

// Options returns the Options that s records.
func (s StoredOptions) Options() Options {
	return Options{PrefixMin: s.PrefixMin, PrefixMax: s.PrefixMax, TokenSize: s.TokenSize, FoldAccents: s.FoldAccents, PhoneRegion: s.PhoneRegion}
}

// OptionDifferences lists, as "name: recorded X, now Y", the options that
// differ between recorded and now and that change the terms of a column
// searchable by kinds: prefix_min and prefix_max for prefix, token_size
// for contains, fold_accents for exact, prefix and contains, phone_region
// for phone. Options a column's kinds do not use never count.
func OptionDifferences(kinds []Kind, recorded, now Options) []string {
	r, n := recorded.Stored(), now.Stored()
	has := map[Kind]bool{}
	for _, k := range kinds {
		has[k] = true
	}
	var out []string
	diff := func(name string, a, b any) {
		if a != b {
			out = append(out, fmt.Sprintf("%s: recorded %v, now %v", name, a, b))
		}
	}
	if has[Prefix] {
		diff("prefix_min", r.PrefixMin, n.PrefixMin)
		diff("prefix_max", r.PrefixMax, n.PrefixMax)
	}
	if has[Contains] {
		diff("token_size", r.TokenSize, n.TokenSize)
	}
	if has[Exact] || has[Prefix] || has[Contains] {
		diff("fold_accents", r.FoldAccents, n.FoldAccents)
	}
	if has[Phone] {
		diff("phone_region", fmt.Sprintf("%q", r.PhoneRegion), fmt.Sprintf("%q", n.PhoneRegion))
	}
	return out
}
