package blindindex

import (
	"strconv"
	"strings"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/unicode/norm"
)

// phoneInfo is the canonical form of a phone number: the messages of its
// phone/e164, phone/last4 and phone/area terms ("" = no term).
type phoneInfo struct {
	number string // "+14155552671", or "digits:5550100" for a number that is not valid
	last4  string // "2671"
	area   string // "+1 415"
}

// parsePhone canonicalizes a stored value or a phone query. A valid number
// (phonenumbers.Parse with the default region, then IsValidNumber) gives its
// E.164 form, the last 4 digits of its national significant number and
// "+<country code> <national destination code>" when the NDC is not empty.
// Anything else with at least 4 ASCII digits (after NFKC) gives
// "digits:" + all those digits and their last 4; less gives nothing.
func parsePhone(value, region string) (phoneInfo, bool) {
	if n, err := phonenumbers.Parse(value, region); err == nil && phonenumbers.IsValidNumber(n) {
		nsn := phonenumbers.GetNationalSignificantNumber(n)
		p := phoneInfo{number: phonenumbers.Format(n, phonenumbers.E164)}
		if len(nsn) >= 4 {
			p.last4 = nsn[len(nsn)-4:]
		}
		if l := ndcLength(n); l > 0 && l <= len(nsn) {
			p.area = "+" + strconv.Itoa(int(n.GetCountryCode())) + " " + nsn[:l]
		}
		return p, true
	}
	d := asciiDigits(norm.NFKC.String(value))
	if len(d) < 4 {
		return phoneInfo{}, false
	}
	return phoneInfo{number: "digits:" + d, last4: d[len(d)-4:]}, true
}

// ndcLength is phonenumbers.GetLengthOfNationalDestinationCode without its
// repeated work: that function classifies the number (a second region lookup
// and a pass over every number type's pattern) before it looks at the
// mobile token, which only a few country codes have, and splits with a
// regular expression. On a backfill the saving is a third of the phone
// terms' cost; TestNDCLengthMatchesLibphonenumber holds the two equal.
func ndcLength(n *phonenumbers.PhoneNumber) int {
	if n.GetExtension() != "" {
		return phonenumbers.GetLengthOfNationalDestinationCode(n)
	}
	groups := digitGroups(phonenumbers.Format(n, phonenumbers.INTERNATIONAL))
	// "+CC NDC ..." gives "", CC, NDC, and at least one more group.
	if len(groups) <= 3 {
		return 0
	}
	if phonenumbers.GetCountryMobileToken(int(n.GetCountryCode())) != "" && phonenumbers.GetNumberType(n) == phonenumbers.MOBILE {
		return len(groups[2]) + len(groups[3])
	}
	return len(groups[2])
}

// digitGroups splits s around runs of characters other than ASCII digits,
// as regexp `\D+` Split(s, -1) does (an empty first group when s starts
// with a separator, an empty last one when it ends with one).
func digitGroups(s string) []string {
	var out []string
	start, inSep := 0, false
	for i := 0; i < len(s); i++ {
		digit := s[i] >= '0' && s[i] <= '9'
		switch {
		case !digit && !inSep:
			out = append(out, s[start:i])
			inSep = true
		case digit && inSep:
			start, inSep = i, false
		}
	}
	if inSep {
		return append(out, "")
	}
	return append(out, s[start:])
}

func asciiDigits(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// parseLast4 accepts exactly four ASCII digits (after NFKC and trimming).
func parseLast4(q string) (string, bool) {
	q = strings.TrimSpace(norm.NFKC.String(q))
	if len(q) != 4 || asciiDigits(q) != q {
		return "", false
	}
	return q, true
}

// parseAreaQuery reads an area code query and returns the area messages it
// may denote (one or two).
//
//   - International form "+<cc> <ndc>", e.g. "+1 415", "+44 20",
//     "+44 (0)20", "+39 06": the country code is the shortest assigned
//     calling code the digits start with (calling codes are prefix-free); a
//     national prefix written in parentheses after it, as in "+44 (0)20", is
//     dropped.
//   - National form, e.g. "415", "(415)", "020": the country code of the
//     default region. If the digits start with the region's national prefix
//     ("0" in GB, "1" in US), both readings are searched: "020" finds
//     "+44 20" (and "+44 020", which does not exist), and "812" in RU finds
//     "+7 812" and "+7 12".
//
// Allowed characters are digits, spaces, '+' (first), '(', ')', '-', '.'.
// The national destination code must have 1 to 7 digits.
func parseAreaQuery(q, region string) ([]string, bool) {
	s := strings.TrimSpace(norm.NFKC.String(q))
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9', r == ' ', r == '(', r == ')', r == '-', r == '.':
		case r == '+' && i == 0:
		default:
			return nil, false
		}
	}
	digits := asciiDigits(s)
	var cc int
	var rests []string
	if strings.HasPrefix(s, "+") {
		for l := 1; l <= 3 && l <= len(digits); l++ {
			c, _ := strconv.Atoi(digits[:l])
			if c > 0 && digits[0] != '0' && phonenumbers.GetRegionCodeForCountryCode(c) != "ZZ" {
				cc = c
				rest := digits[l:]
				// "(0)" style national prefix right after the country code
				ndd := phonenumbers.GetNddPrefixForRegion(phonenumbers.GetRegionCodeForCountryCode(c), true)
				after := strings.TrimLeft(s[1:], "0123456789")
				if ndd != "" && strings.HasPrefix(strings.ReplaceAll(after, " ", ""), "("+ndd+")") && strings.HasPrefix(rest, ndd) {
					rest = rest[len(ndd):]
				}
				rests = []string{rest}
				break
			}
		}
		if cc == 0 {
			return nil, false
		}
	} else {
		if region == "" {
			return nil, false
		}
		cc = phonenumbers.GetCountryCodeForRegion(region)
		rests = []string{digits}
		if ndd := phonenumbers.GetNddPrefixForRegion(region, true); ndd != "" && strings.HasPrefix(digits, ndd) && len(digits) > len(ndd) {
			rests = append(rests, digits[len(ndd):])
		}
	}
	var out []string
	for _, r := range rests {
		if len(r) < 1 || len(r) > 7 {
			continue
		}
		out = append(out, "+"+strconv.Itoa(cc)+" "+r)
	}
	return out, len(out) > 0
}
