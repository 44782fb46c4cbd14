package blindindex

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// Kind is a search kind as named in the configuration.
type Kind string

// Search kinds.
const (
	Exact    Kind = "exact"    // equality of the normalized value
	Prefix   Kind = "prefix"   // the value starts with the query
	Contains Kind = "contains" // the value contains the query
	Phonetic Kind = "phonetic" // every query word sounds like a word of the value
	Phone    Kind = "phone"    // phone number: whole number, last four digits, area code
	Date     Kind = "date"     // date: day, year, year and month, age range
)

// kindOrder is the stable order of kinds in SubKinds.
var kindOrder = []Kind{Exact, Prefix, Contains, Phonetic, Phone, Date}

// SubKind is one family of terms. Each sub-kind has its own HMAC key, its
// own tag (Tag) and its own truncation.
type SubKind string

// Sub-kinds. Prefix sub-kinds are "prefix/N" for every N from
// Options.PrefixMin to Options.PrefixMax (see PrefixSubKind).
const (
	SubExact       SubKind = "exact"
	SubPrefix3     SubKind = "prefix/3"
	SubPrefix4     SubKind = "prefix/4"
	SubPrefix5     SubKind = "prefix/5"
	SubContains    SubKind = "contains"
	SubPhonetic    SubKind = "phonetic"
	SubPhoneE164   SubKind = "phone/e164"
	SubPhoneLast4  SubKind = "phone/last4"
	SubPhoneArea   SubKind = "phone/area"
	SubDate        SubKind = "date/day"
	SubYear        SubKind = "date/year"
	SubYearMonth   SubKind = "date/month"
	maxPrefixRunes         = 32
)

// PrefixSubKind returns the sub-kind of prefixes of n runes, "prefix/n".
func PrefixSubKind(n int) SubKind { return SubKind("prefix/" + strconv.Itoa(n)) }

// prefixLen returns N for "prefix/N" (1 <= N <= 32), else 0.
func prefixLen(s SubKind) int {
	rest, ok := strings.CutPrefix(string(s), "prefix/")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || n > maxPrefixRunes || strconv.Itoa(n) != rest {
		return 0
	}
	return n
}

// Tag returns the 8-bit tag of a sub-kind, stored in the top byte of each of
// its terms so that terms of different sub-kinds never compare equal:
//
//	exact 0x01, contains 0x02, phonetic 0x03, phone/e164 0x04,
//	phone/last4 0x05, phone/area 0x06, date/day 0x07, date/year 0x08,
//	date/month 0x09, prefix/N 0x10+N (N = 1..32).
//
// Tags are part of the stored format and never change. Tag returns 0 for an
// unknown sub-kind.
func Tag(s SubKind) byte {
	switch s {
	case SubExact:
		return 0x01
	case SubContains:
		return 0x02
	case SubPhonetic:
		return 0x03
	case SubPhoneE164:
		return 0x04
	case SubPhoneLast4:
		return 0x05
	case SubPhoneArea:
		return 0x06
	case SubDate:
		return 0x07
	case SubYear:
		return 0x08
	case SubYearMonth:
		return 0x09
	}
	if n := prefixLen(s); n > 0 {
		return byte(0x10 + n)
	}
	return 0
}

// Options tune the terms of a column. Zero PrefixMin, PrefixMax and
// TokenSize mean their defaults; FoldAccents has no "unset" state, so start
// from Defaults.
type Options struct {
	PrefixMin, PrefixMax int    // indexed prefix lengths in runes, default 3 and 5 (1 <= min <= max <= 32)
	TokenSize            int    // n-gram length of contains in runes, default 3 (2..8)
	FoldAccents          bool   // Normalize with foldAccents (exact, prefix, contains); Defaults: true
	PhoneRegion          string // region (ISO 3166 alpha-2, e.g. "US") of numbers written without country code; "" = none
}

// Defaults returns PrefixMin 3, PrefixMax 5, TokenSize 3, FoldAccents true
// and PhoneRegion "US".
func Defaults() Options {
	return Options{PrefixMin: 3, PrefixMax: 5, TokenSize: 3, FoldAccents: true, PhoneRegion: "US"}
}

// withDefaults fills zero fields and upper-cases the region.
func (o Options) withDefaults() Options {
	d := Defaults()
	if o.PrefixMin == 0 {
		o.PrefixMin = d.PrefixMin
	}
	if o.PrefixMax == 0 {
		o.PrefixMax = max(d.PrefixMax, o.PrefixMin)
	}
	if o.TokenSize == 0 {
		o.TokenSize = d.TokenSize
	}
	o.PhoneRegion = strings.ToUpper(strings.TrimSpace(o.PhoneRegion))
	return o
}

func (o Options) validate() error {
	if o.PrefixMin < 1 || o.PrefixMax > maxPrefixRunes || o.PrefixMin > o.PrefixMax {
		return fmt.Errorf("blindindex: prefix lengths %d..%d invalid (need 1 <= min <= max <= %d)", o.PrefixMin, o.PrefixMax, maxPrefixRunes)
	}
	if o.TokenSize < 2 || o.TokenSize > 8 {
		return fmt.Errorf("blindindex: token size %d invalid (need 2..8)", o.TokenSize)
	}
	if o.PhoneRegion != "" && phonenumbers.GetCountryCodeForRegion(o.PhoneRegion) == 0 {
		return fmt.Errorf("blindindex: unknown phone region `%s`", o.PhoneRegion)
	}
	return nil
}

// SubKinds lists the sub-kinds the given kinds produce, without duplicates,
// in a stable order: exact, prefix/min..prefix/max, contains, phonetic,
// phone/e164, phone/last4, phone/area, date/day, date/year, date/month.
// Unknown kinds are ignored. Zero fields of o take their defaults.
func SubKinds(kinds []Kind, o Options) []SubKind {
	o = o.withDefaults()
	has := map[Kind]bool{}
	for _, k := range kinds {
		has[k] = true
	}
	var out []SubKind
	for _, k := range kindOrder {
		if has[k] {
			out = append(out, registry[k].subKinds(o)...)
		}
	}
	return out
}

// kindOfSubKind returns which of kinds sub-kind s belongs to.
func kindOfSubKind(s SubKind, kinds []Kind, o Options) Kind {
	for _, k := range kinds {
		if slices.Contains(registry[k].subKinds(o), s) {
			return k
		}
	}
	panic("blindindex: sub-kind " + string(s) + " of no kind")
}
