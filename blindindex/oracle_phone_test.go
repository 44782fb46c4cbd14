package blindindex

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

// phoneTruth is the ground truth of a generated phone value: a valid number
// (cc, nsn, ndc) or, when cc is 0, a string that is not a valid number with
// the given ASCII digits.
type phoneTruth struct {
	cc     int
	nsn    string
	ndc    string
	digits string
}

var phoneRegions = []string{"US", "GB", "KE", "IN", "DE"}

// validNumbers draws valid numbers of the regions by varying the last
// digits of libphonenumber's example numbers (validity is libphonenumber's
// call; NDCs are known by construction per region below).
func validNumbers(r *rand.Rand, n int) []phoneTruth {
	types := []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE, phonenumbers.MOBILE}
	var out []phoneTruth
	for len(out) < n {
		reg := phoneRegions[r.IntN(len(phoneRegions))]
		ex := phonenumbers.GetExampleNumberForType(reg, types[r.IntN(2)])
		nsn := []byte(strconv.FormatUint(ex.GetNationalNumber(), 10))
		for i := len(nsn) - 1 - r.IntN(4); i < len(nsn); i++ {
			nsn[i] = byte('0' + r.IntN(10))
		}
		num, err := phonenumbers.Parse("+"+strconv.Itoa(int(ex.GetCountryCode()))+string(nsn), "")
		if err != nil || !phonenumbers.IsValidNumber(num) {
			continue
		}
		out = append(out, phoneTruth{cc: int(ex.GetCountryCode()), nsn: string(nsn), ndc: oracleNDC(num)})
	}
	return out
}

// oracleNDC is the second group of the international format
// ("+44 20 7946 0958" -> "20"), which is how libphonenumber defines the
// national destination code for these regions.
func oracleNDC(n *phonenumbers.PhoneNumber) string {
	f := strings.FieldsFunc(phonenumbers.Format(n, phonenumbers.INTERNATIONAL), func(r rune) bool { return r == ' ' || r == '-' })
	if len(f) < 3 {
		return ""
	}
	return f[1]
}

// groupDigits writes digits in random groups with random separators.
func groupDigits(r *rand.Rand, d string) string {
	var b strings.Builder
	for i := 0; i < len(d); {
		n := min(len(d)-i, 1+r.IntN(4))
		if i > 0 {
			b.WriteString([]string{" ", "-", ".", "", " "}[r.IntN(5)])
		}
		b.WriteString(d[i : i+n])
		i += n
	}
	return b.String()
}

// showPhone writes a valid number in a format that means it under the
// column's default region.
func showPhone(r *rand.Rand, p phoneTruth, region string) string {
	cc := strconv.Itoa(p.cc)
	home := phonenumbers.GetCountryCodeForRegion(region) == p.cc
	switch k := r.IntN(5); {
	case k == 0:
		return "+" + cc + p.nsn
	case k == 1:
		return "+" + cc + " " + groupDigits(r, p.nsn)
	case k == 2 && home && p.cc == 1:
		return fmt.Sprintf("(%s) %s-%s", p.nsn[:3], p.nsn[3:6], p.nsn[6:])
	case k == 2 && home:
		return "0" + groupDigits(r, p.nsn)
	case k == 3 && home && p.cc == 1:
		return "1-" + groupDigits(r, p.nsn)
	case k == 3 && home:
		return groupDigits(r, "0"+p.nsn)
	case k == 4 && home && p.cc == 1:
		return groupDigits(r, p.nsn)
	}
	return "+" + cc + " (" + p.nsn[:2] + ") " + groupDigits(r, p.nsn[2:])
}

// invalidPhones are strings that are not valid numbers under region.
func invalidPhones(r *rand.Rand, n int, region string) []phoneTruth {
	var out []phoneTruth
	for len(out) < n {
		d := make([]byte, r.IntN(10))
		for i := range d {
			d[i] = byte('0' + r.IntN(10))
		}
		if r.IntN(3) == 0 && len(d) >= 4 { // reuse a popular ending
			copy(d[len(d)-4:], "0100")
		}
		s := groupDigits(r, string(d))
		if r.IntN(4) == 0 {
			s = "tel " + s
		}
		if num, err := phonenumbers.Parse(s, region); err == nil && phonenumbers.IsValidNumber(num) {
			continue
		}
		out = append(out, phoneTruth{digits: string(d), nsn: s})
	}
	return out
}

func (p phoneTruth) last4() string {
	d := p.nsn
	if p.cc == 0 {
		d = p.digits
	}
	if len(d) < 4 {
		return ""
	}
	return d[len(d)-4:]
}

func TestOraclePhone(t *testing.T) {
	for _, region := range []string{"US", "GB", "KE"} {
		t.Run(region, func(t *testing.T) {
			r := rand.New(rand.NewPCG(9, uint64(len(region)+int(region[0]))))
			o := Defaults()
			o.PhoneRegion = region
			c := newTestColumn(t, "phone", []Kind{Phone}, o, 8)
			truths := validNumbers(r, 900)
			truths = append(truths, invalidPhones(r, 300, region)...)
			shown := make([]string, len(truths))
			terms := make([][]int64, len(truths))
			for i, p := range truths {
				if p.cc != 0 {
					shown[i] = showPhone(r, p, region)
				} else {
					shown[i] = p.nsn
				}
				terms[i] = c.Terms(nil, shown[i])
				if len(terms[i]) == 0 && (p.cc != 0 || len(p.digits) >= 4) {
					t.Fatalf("%q: no terms", shown[i])
				}
			}
			var matches, fp [3]int
			for n := range 240 {
				q := truths[r.IntN(len(truths))]
				if r.IntN(6) == 0 {
					q = validNumbers(r, 1)[0]
				}
				switch n % 3 {
				case 0: // whole number
					qs := q.nsn
					if q.cc != 0 {
						qs = showPhone(r, q, region)
					}
					p, err := c.Query(Query{Kind: QPhone, Value: qs})
					if q.cc == 0 && len(q.digits) < 4 {
						if err == nil {
							t.Fatalf("phone %q: want error", qs)
						}
						continue
					}
					if err != nil {
						t.Fatalf("phone %q: %v", qs, err)
					}
					m, f := checkPlanSample(t, "phone "+qs, p, shown, terms, func(i int) bool {
						a := truths[i]
						if q.cc != 0 {
							return a.cc == q.cc && a.nsn == q.nsn
						}
						return a.cc == 0 && a.digits == q.digits
					}, 8)
					matches[0] += m
					fp[0] += f
				case 1: // last four
					l4 := q.last4()
					if l4 == "" {
						continue
					}
					p, err := c.Query(Query{Kind: QLast4, Value: " " + l4})
					if err != nil {
						t.Fatal(err)
					}
					m, f := checkPlanSample(t, "last4 "+l4, p, shown, terms, func(i int) bool { return truths[i].last4() == l4 }, 8)
					matches[1] += m
					fp[1] += f
				case 2: // area code
					if q.cc == 0 || q.ndc == "" {
						continue
					}
					qs := "+" + strconv.Itoa(q.cc) + " " + q.ndc
					home := phonenumbers.GetCountryCodeForRegion(region) == q.cc
					switch {
					case home && q.cc == 1 && r.IntN(2) == 0:
						qs = "(" + q.ndc + ")"
					case home && q.cc != 1 && r.IntN(2) == 0:
						qs = "0" + q.ndc
					case q.cc != 1 && r.IntN(3) == 0:
						qs = "+" + strconv.Itoa(q.cc) + " (0)" + q.ndc
					}
					p, err := c.Query(Query{Kind: QAreaCode, Value: qs})
					if err != nil {
						t.Fatalf("area %q: %v", qs, err)
					}
					m, f := checkPlanSample(t, "area "+qs, p, shown, terms, func(i int) bool {
						return truths[i].cc == q.cc && truths[i].ndc == q.ndc
					}, 8)
					matches[2] += m
					fp[2] += f
				}
			}
			t.Logf("matches (phone, last4, area) %v, false positives removed %v", matches, fp)
			// (Areas are too few to collide in 8 bits: no false positives there.)
			if matches[0] == 0 || matches[1] == 0 || matches[2] == 0 || fp[0] == 0 || fp[1] == 0 {
				t.Errorf("need matches of every kind and false positives of phone and last4")
			}
		})
	}
}

func TestPhoneFormats(t *testing.T) {
	type want struct{ number, last4, area string }
	cases := []struct {
		region, in string
		want       want
	}{
		{"US", "+1 415 555 2671", want{"+14155552671", "2671", "+1 415"}},
		{"US", "(415) 555-2671", want{"+14155552671", "2671", "+1 415"}},
		{"US", "1-415-555-2671", want{"+14155552671", "2671", "+1 415"}},
		{"US", "415.555.2671 ext. 12", want{"+14155552671", "2671", "+1 415"}},
		{"US", "+44 20 7946 0958", want{"+442079460958", "0958", "+44 20"}},
		{"GB", "020 7946 0958", want{"+442079460958", "0958", "+44 20"}},
		{"GB", "+44 (0)20 7946 0958", want{"+442079460958", "0958", "+44 20"}},
		{"GB", "07911 123456", want{"+447911123456", "3456", "+44 7911"}},
		{"KE", "0712 345678", want{"+254712345678", "5678", "+254 712"}},
		{"US", "+254 712 345 678", want{"+254712345678", "5678", "+254 712"}},
		{"IN", "98765 43210", want{"+919876543210", "3210", "+91 98765"}},
		{"US", "+91 11 2345 6789", want{"+911123456789", "6789", "+91 11"}},
		{"DE", "030 123456", want{"+4930123456", "3456", "+49 30"}},
		{"US", "+49 1512 3456789", want{"+4915123456789", "6789", "+49 1512"}},
		{"US", "+39 06 1234 5678", want{"+390612345678", "5678", "+39 06"}},
		{"US", "555-0100", want{"digits:5550100", "0100", ""}},             // not valid: digits
		{"US", "+44 7700 900123", want{"digits:447700900123", "0123", ""}}, // reserved for drama
		{"", "415 555 2671", want{"digits:4155552671", "2671", ""}},        // no default region
		{"US", "123", want{}},
		{"US", "", want{}},
		{"US", "n/a", want{}},
	}
	for _, c := range cases {
		p, ok := parsePhone(c.in, c.region)
		if got := (want{p.number, p.last4, p.area}); got != c.want || ok != (c.want.number != "") {
			t.Errorf("%s %q: got %+v %v, want %+v", c.region, c.in, got, ok, c.want)
		}
	}
	areas := []struct {
		region, in string
		want       []string
	}{
		{"US", "+1 415", []string{"+1 415"}},
		{"US", "415", []string{"+1 415"}},
		{"US", "(415)", []string{"+1 415"}},
		{"US", "1 (415)", []string{"+1 1415", "+1 415"}},
		{"US", "+44 20", []string{"+44 20"}},
		{"US", "+4420", []string{"+44 20"}},
		{"US", "+44 (0)20", []string{"+44 20"}},
		{"GB", "020", []string{"+44 020", "+44 20"}},
		{"KE", "0712", []string{"+254 0712", "+254 712"}},
		{"RU", "812", []string{"+7 812", "+7 12"}},
		{"US", "+7 812", []string{"+7 812"}},
		{"US", "+39 06", []string{"+39 06"}},
		{"", "415", nil},
		{"US", "+", nil},
		{"US", "+1", nil},
		{"US", "abc", nil},
		{"US", "4 1+5", nil},
		{"US", "123456789", nil},
	}
	for _, a := range areas {
		got, ok := parseAreaQuery(a.in, a.region)
		if !slices.Equal(got, a.want) || ok != (a.want != nil) {
			t.Errorf("area %s %q: got %q %v, want %q", a.region, a.in, got, ok, a.want)
		}
	}
}

// TestNDCLengthMatchesLibphonenumber holds ndcLength equal to
// phonenumbers.GetLengthOfNationalDestinationCode on every valid number the
// demo writes and on libphonenumber's example numbers of every region and
// type, including Argentina's mobile token.
func TestNDCLengthMatchesLibphonenumber(t *testing.T) {
	var nums []*phonenumbers.PhoneNumber
	for reg := range phonenumbers.GetSupportedRegions() {
		for _, typ := range []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE, phonenumbers.MOBILE,
			phonenumbers.TOLL_FREE, phonenumbers.VOIP, phonenumbers.PREMIUM_RATE, phonenumbers.PAGER, phonenumbers.UAN} {
			if ex := phonenumbers.GetExampleNumberForType(reg, typ); ex != nil {
				nums = append(nums, ex)
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range validNumbers(r, 2000) {
		n, err := phonenumbers.Parse("+"+strconv.Itoa(p.cc)+p.nsn, "")
		if err != nil {
			t.Fatal(err)
		}
		nums = append(nums, n)
	}
	ext, _ := phonenumbers.Parse("+1 415 555 0123 ext. 77", "US")
	nums = append(nums, ext)
	if len(nums) < 1000 {
		t.Fatalf("only %d numbers", len(nums))
	}
	for _, n := range nums {
		if got, want := ndcLength(n), phonenumbers.GetLengthOfNationalDestinationCode(n); got != want {
			t.Errorf("+%d %d: ndcLength = %d, libphonenumber %d", n.GetCountryCode(), n.GetNationalNumber(), got, want)
		}
	}
}

func TestDigitGroups(t *testing.T) {
	for _, s := range []string{"", "+1 415-555-0123", "12", "+", "1 2", "a", "12a", "a12", "+54 9 11 1234-5678", "--1--"} {
		want := regexp.MustCompile(`(\D+)`).Split(s, -1)
		if got := digitGroups(s); !slices.Equal(got, want) {
			t.Errorf("digitGroups(%q) = %q, want %q", s, got, want)
		}
	}
}
