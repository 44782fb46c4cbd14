package demo

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Identification types. In Felicity these are rows of the "identification"
// table; the demo only needs their uids, which are fixed.
var (
	idNational    = fixedUID("national-id")
	idPassport    = fixedUID("passport")
	idSSN         = fixedUID("ssn")
	idNHS         = fixedUID("nhs-number")
	idMRN         = fixedUID("mrn")
	idBirthCert   = fixedUID("birth-certificate")
	idNIN         = fixedUID("ni-number")
	idDriverLicen = fixedUID("driving-licence")
)

// IdentificationTypes maps the identification_uid values used in
// patient_identification to a human-readable name.
var IdentificationTypes = map[string]string{
	idNational:    "National ID",
	idPassport:    "Passport",
	idSSN:         "Social Security Number",
	idNHS:         "NHS Number",
	idMRN:         "Medical Record Number",
	idBirthCert:   "Birth Certificate",
	idNIN:         "National Insurance Number",
	idDriverLicen: "Driving Licence",
}

func fixedUID(key string) string {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	r := rng{s: h}
	return r.ulid(time.Date(2018, 6, 1, 0, 0, 0, 0, time.UTC))
}

type identification struct {
	uid, patientUID, identificationUID, value string
	createdAt                                 time.Time
}

var identificationColumns = []string{"uid", "patient_uid", "identification_uid", "value", "created_at"}

func (x *identification) values() []any {
	return []any{x.uid, x.patientUID, x.identificationUID, x.value, x.createdAt}
}

// genIdentifications returns the identity documents of patient p (number i):
// none for ~15%, one for ~70%, two for ~15%.
func genIdentifications(seed int64, i int, p *patient) []identification {
	r := newRNG(seed, streamIdent, i, 0)
	n := 1
	switch x := r.intn(100); {
	case x < 15:
		n = 0
	case x < 85:
		n = 1
	default:
		n = 2
	}
	out := make([]identification, 0, n)
	used := map[string]bool{}
	for k := 0; k < n; k++ {
		typ, val := r.document(p)
		if used[typ] {
			typ, val = idMRN, r.mrn()
			if used[typ] {
				break
			}
		}
		used[typ] = true
		created := p.createdAt.Add(time.Duration(k+1) * time.Second)
		out = append(out, identification{
			uid:               r.ulid(created),
			createdAt:         created,
			patientUID:        p.uid,
			identificationUID: typ,
			value:             r.messyID(val),
		})
	}
	return out
}

func (r *rng) mrn() string {
	return r.fill(pick(r, []string{"MRN-0######", "H-%#####", "00######", "MRN #######", "%#######"}), "")
}

// document returns an identity document shaped for the patient's country.
func (r *rng) document(p *patient) (typ, value string) {
	if r.chance(0.25) {
		return idMRN, r.mrn()
	}
	if p.age >= 0 && p.age < 16 && r.chance(0.6) {
		year := p.createdAt.Year() - p.age
		if !p.dob.IsZero() {
			year = p.dob.Year()
		}
		return idBirthCert, r.fill(pick(r, []string{"BC/" + strconv.Itoa(year) + "/0#####", "%########", "B-#######"}), "")
	}
	if r.chance(0.2) {
		return idPassport, r.passport(p.country)
	}
	switch p.country {
	case "US":
		if r.chance(0.15) {
			return idDriverLicen, r.fill(pick(r, []string{"D123-####-####", "%#######", "?#######"}), "")
		}
		// Area 001-899 except 666, group 01-99, serial 0001-9999.
		area := r.between(1, 899)
		if area == 666 {
			area = 667
		}
		return idSSN, fmt.Sprintf("%03d-%02d-%04d", area, r.between(1, 99), r.between(1, 9999))
	case "GB":
		if r.chance(0.7) { // NHS numbers starting 999 are reserved for testing
			return idNHS, r.fill(pick(r, []string{"999 ### ####", "999#######", "999-###-####"}), "")
		}
		// QQ is the prefix HMRC uses in examples and never issues.
		return idNIN, r.fill(pick(r, []string{"QQ ## ## ## C", "QQ######C", "QQ ###### D"}), "")
	case "KE":
		return idNational, r.fill(pick(r, []string{"%#######", "%######"}), "")
	case "UG":
		sex := "M"
		if p.female {
			sex = "F"
		}
		return idNational, "C" + sex + r.fill("########???", "")
	case "ZA":
		// YYMMDD SSSS C A Z, built from the date of birth when known.
		ymd := r.fill("######", "")
		if !p.dob.IsZero() {
			ymd = p.dob.Format("060102")
		}
		seq := r.between(0, 4999)
		if !p.female {
			seq += 5000
		}
		return idNational, fmt.Sprintf("%s%04d%d8%d", ymd, seq, r.intn(2), r.intn(10))
	case "DE":
		return idNational, r.fill("?########", "")
	case "IN":
		return idNational, r.fill(pick(r, []string{"%### #### ####", "%###########", "%###-####-####"}), "")
	case "ES":
		return idNational, r.fill("########?", "")
	case "BR":
		return idNational, r.fill(pick(r, []string{"###.###.###-##", "###########"}), "")
	case "FR":
		sex := "1"
		if p.female {
			sex = "2"
		}
		return idNational, r.fill(sex+" ## ## ## ### ### ##", "")
	case "CN":
		ymd := "19900101"
		if !p.dob.IsZero() {
			ymd = p.dob.Format("20060102")
		}
		return idNational, r.fill("1101##", "") + ymd + r.fill("###", "") + pick(r, []string{"0", "1", "2", "5", "X"})
	default:
		return idNational, r.fill(pick(r, []string{"%########", "??%######", "####-####-####"}), "")
	}
}

func (r *rng) passport(cc string) string {
	switch cc {
	case "US", "GB":
		return r.fill("%########", "")
	case "KE":
		return r.fill("?K#######", "")
	case "DE":
		return r.fill("C?#?#?#?#", "")
	case "IN":
		return r.fill("?%######", "")
	default:
		return r.fill(pick(r, []string{"?########", "??#######", "?#######"}), "")
	}
}

// messyID: ~3% of identifiers are typed with odd spacing or case.
func (r *rng) messyID(s string) string {
	if !r.chance(0.03) {
		return s
	}
	switch r.intn(4) {
	case 0:
		return strings.ToLower(s)
	case 1:
		return " " + s
	case 2:
		return strings.ReplaceAll(strings.ReplaceAll(s, "-", ""), " ", "")
	default:
		return s + " "
	}
}
