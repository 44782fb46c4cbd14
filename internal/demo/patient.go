package demo

import (
	"strconv"
	"strings"
	"time"
)

var (
	// refTime is "now" for the generated data set. It is fixed (rather than
	// time.Now) so that a seed always yields the same rows.
	refTime = time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC)
	// firstRegistration is when the oldest patient was registered.
	firstRegistration = time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	minDOB            = time.Date(1920, 1, 1, 0, 0, 0, 0, time.UTC)
)

// nstr is a nullable string.
type nstr struct {
	s     string
	valid bool
}

func some(s string) nstr { return nstr{s: s, valid: true} }

func (n nstr) value() any {
	if !n.valid {
		return nil
	}
	return n.s
}

// patient is one generated row of "patient".
type patient struct {
	uid             string
	clientPatientID string
	patientID       string
	firstName       nstr
	middleName      nstr
	lastName        nstr
	gender          nstr
	dob             time.Time // zero when NULL
	age             int       // -1 when NULL
	dobEstimated    bool
	phoneMobile     nstr
	phoneHome       nstr
	email           nstr
	consentSMS      bool
	internalUse     bool
	createdAt       time.Time
	updatedAt       time.Time

	// Not stored in the patient row, used by the dependent tables.
	culture *culture
	country string
	female  bool
	// plain versions of the names (no messy whitespace/case), for notes.
	plainFirst, plainLast string
}

var patientColumns = []string{"uid", "client_patient_id", "patient_id", "first_name", "middle_name",
	"last_name", "gender", "date_of_birth", "age", "age_dob_estimated", "phone_mobile", "phone_home",
	"email", "consent_sms", "internal_use", "created_at", "updated_at"}

func (p *patient) values() []any {
	var dob, age any
	if !p.dob.IsZero() {
		dob = p.dob
	}
	if p.age >= 0 {
		age = int32(p.age)
	}
	return []any{p.uid, p.clientPatientID, p.patientID, p.firstName.value(), p.middleName.value(),
		p.lastName.value(), p.gender.value(), dob, age, p.dobEstimated, p.phoneMobile.value(),
		p.phoneHome.value(), p.email.value(), p.consentSMS, p.internalUse, p.createdAt, p.updatedAt}
}

// randomTime returns a uniformly random instant in [from, to), biased toward
// working hours the way lab registrations are.
func (r *rng) randomTime(from, to time.Time) time.Time {
	days := int(to.Sub(from).Hours() / 24)
	if days < 1 {
		days = 1
	}
	d := from.Truncate(24*time.Hour).AddDate(0, 0, r.intn(days))
	var secs int
	if r.chance(0.85) {
		secs = r.between(7*3600, 18*3600)
	} else {
		secs = r.intn(86400)
	}
	t := d.Add(time.Duration(secs)*time.Second + time.Duration(r.intn(1000))*time.Millisecond)
	if t.Before(from) {
		t = from
	}
	if !t.Before(to) {
		t = to.Add(-time.Second)
	}
	return t
}

func (r *rng) pickName(c *culture, list []name, idx int) string {
	n := list[idx]
	if n.explicit && c.romanize > 0 && r.chance(c.romanize) {
		return pick(r, n.roman)
	}
	return n.s
}

// messy applies the ~1% of real-world sloppiness: stray spaces and odd case.
func (r *rng) messy(s string) string {
	if !r.chance(0.012) {
		return s
	}
	switch r.intn(6) {
	case 0:
		return " " + s
	case 1:
		return s + " "
	case 2:
		return "  " + s + " "
	case 3:
		return strings.ToUpper(s)
	case 4:
		return strings.ToLower(s)
	default:
		return s + "  "
	}
}

func yearsBetween(from, to time.Time) int {
	y := to.Year() - from.Year()
	if to.Month() < from.Month() || (to.Month() == from.Month() && to.Day() < from.Day()) {
		y--
	}
	return y
}

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

var emailDomains = []string{"example.com", "example.org", "example.net", "mail.example.com",
	"inbox.example.org", "patients.example.net", "ke.example.com", "post.example.de", "correo.example.es"}

var clientIDTemplates = []string{"KNH/20##/0####", "MRN ######", "####-###", "CL-######", "HN #######",
	"########", "OPD/#####/2#", "ccc-#####", "ART-#####", "  ######"}

// genPatient generates patient number i (0-based) for seed. It is a pure
// function of (seed, i).
func genPatient(seed int64, i int) patient {
	r := newRNG(seed, streamPatient, i, 0)
	var p patient

	p.createdAt = r.randomTime(firstRegistration, refTime.AddDate(0, 0, -14))
	p.uid = r.ulid(p.createdAt)
	p.patientID = "P" + strconv.Itoa(p.createdAt.Year()%100) + "-" + pad(strconv.Itoa(i+1), 7)
	p.clientPatientID = r.fill(pick(&r, clientIDTemplates), "")

	c := cultures[weighted(&r, cultureWeights)]
	p.culture = c
	p.country = c.countries[weighted(&r, c.countryW)]
	if r.chance(0.05) { // migrants, travellers, data-entry surprises
		p.country = pick(&r, countryCodes)
	}

	// Gender (Felicity stores free text; mostly Male/Female).
	switch g := r.intn(1000); {
	case g < 485:
		p.gender = some("Male")
	case g < 975:
		p.gender = some("Female")
		p.female = true
	case g < 985:
		p.gender = some("Missing")
		p.female = r.chance(0.5)
	case g < 990:
		p.gender = some("Unknown")
		p.female = r.chance(0.5)
	case g < 994:
		p.gender = some("F")
		p.female = true
	case g < 998:
		p.gender = some("M")
	default:
		p.female = r.chance(0.5)
	}

	given := c.male
	if p.female {
		given = c.female
	}
	p.plainFirst = r.pickName(c, given, r.intn(len(given)))
	si := r.intn(len(c.surnames))
	surnames := c.surnames
	if p.female && c.surnamesF != nil {
		surnames = c.surnamesF
	}
	p.plainLast = r.pickName(c, surnames, si)
	if c.doubleSurname > 0 && r.chance(c.doubleSurname) {
		second := r.pickName(c, surnames, r.intn(len(surnames)))
		if second != p.plainLast {
			p.plainLast += c.doubleSep + second
		}
	}
	p.firstName = some(r.messy(p.plainFirst))
	p.lastName = some(r.messy(p.plainLast))
	if r.chance(0.002) {
		p.lastName = some("")
	}
	if r.chance(0.001) {
		p.firstName = some("")
	}

	if r.chance(c.middleProb) {
		mid := c.middleM
		if p.female {
			mid = c.middleF
		}
		if mid == nil {
			mid = given
		}
		p.middleName = some(r.messy(r.pickName(c, mid, r.intn(len(mid)))))
		if r.chance(0.08) { // initial only
			m := []rune(strings.TrimSpace(p.middleName.s))
			if len(m) > 0 {
				p.middleName = some(string(m[0]) + ".")
			}
		}
	} else if r.chance(0.01) {
		p.middleName = some("")
	}

	// Date of birth and age at registration.
	var ageY int
	switch a := r.intn(100); {
	case a < 8:
		ageY = r.between(0, 4)
	case a < 18:
		ageY = r.between(5, 17)
	case a < 63:
		ageY = r.between(18, 44)
	case a < 88:
		ageY = r.between(45, 64)
	default:
		ageY = r.between(65, 100)
	}
	regDay := p.createdAt.Truncate(24 * time.Hour)
	dob := regDay.AddDate(-ageY, 0, -r.intn(365))
	switch x := r.intn(1000); {
	case x < 50: // estimated from stated age: 1 Jan or 1 Jul
		p.dobEstimated = true
		month := time.January
		if r.chance(0.3) {
			month = time.July
		}
		dob = time.Date(dob.Year(), month, 1, 0, 0, 0, 0, time.UTC)
	case x < 54: // leap-day birthdays, a classic edge case
		y := dob.Year()
		for !isLeap(y) {
			y--
		}
		dob = time.Date(y, time.February, 29, 0, 0, 0, 0, time.UTC)
	}
	if dob.Before(minDOB) {
		dob = minDOB.AddDate(0, 0, r.intn(365))
	}
	if dob.After(regDay) {
		dob = regDay
	}
	p.dob = dob
	p.age = yearsBetween(dob, regDay)
	if r.chance(0.02) && p.age > 0 { // age typed in by hand, off by one
		p.age += pick(&r, []int{-1, 1})
	}
	if r.chance(0.01) {
		p.dob = time.Time{}
		if r.chance(0.3) {
			p.age = -1
		}
	}

	// Phones.
	switch x := r.intn(1000); {
	case x < 50:
	case x < 55:
		p.phoneMobile = some(pick(&r, invalidPhones))
	case x < 58:
		p.phoneMobile = some("")
	default:
		p.phoneMobile = some(r.phone(p.country, true))
	}
	switch x := r.intn(1000); {
	case x < 620:
	case x < 625:
		p.phoneHome = some(pick(&r, invalidPhones))
	case x < 630:
		p.phoneHome = some("")
	default:
		p.phoneHome = some(r.phone(p.country, false))
	}

	// E-mail: NULL ~20%, empty ~0.5%.
	switch x := r.intn(1000); {
	case x < 200:
	case x < 205:
		p.email = some("")
	default:
		p.email = some(r.email(c, p.plainFirst, p.plainLast, given, surnames))
	}

	p.consentSMS = p.phoneMobile.valid && p.phoneMobile.s != "" && r.chance(0.6)
	p.internalUse = r.chance(0.01)

	p.updatedAt = p.createdAt
	if r.chance(0.7) {
		p.updatedAt = r.randomTime(p.createdAt, refTime)
	}
	return p
}

func pad(s string, n int) string {
	for len(s) < n {
		s = "0" + s
	}
	return s
}

// romanOf returns an ASCII transliteration of a generated name.
func romanOf(s string, lists ...[]name) string {
	for _, l := range lists {
		for _, n := range l {
			if n.s == s {
				return fold(n.roman[0])
			}
		}
	}
	return fold(s)
}

func (r *rng) email(c *culture, first, last string, given, surnames []name) string {
	f := romanOf(first, given)
	l := romanOf(last, surnames)
	if f == "" {
		f = "patient"
	}
	if l == "" {
		l = r.digits(4)
	}
	var local string
	switch r.intn(7) {
	case 0:
		local = f + "." + l
	case 1:
		local = f + l
	case 2:
		local = f[:1] + "." + l
	case 3:
		local = f + "_" + l
	case 4:
		local = f + strconv.Itoa(r.between(1, 99))
	case 5:
		local = l + "." + f + strconv.Itoa(r.between(1950, 2015))
	default:
		local = f + "." + l + strconv.Itoa(r.between(1, 9))
	}
	if r.chance(0.02) {
		local += "+lab"
	}
	addr := local + "@" + pick(r, emailDomains)
	if r.chance(0.02) { // people do type their address in capitals
		addr = strings.ToUpper(addr[:1]) + addr[1:]
		if r.chance(0.5) {
			addr = strings.ToUpper(addr)
		}
	}
	return addr
}
