package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// sample is every generated row for the first n patients of a seed.
type sample struct {
	patients []patient
	idents   [][]identification
	results  [][]result
	muts     [][][]mutation
	clinical []*clinical
}

func generate(seed int64, n int) *sample {
	s := &sample{}
	for i := 0; i < n; i++ {
		p := genPatient(seed, i)
		s.patients = append(s.patients, p)
		s.idents = append(s.idents, genIdentifications(seed, i, &p))
		rs := genResults(seed, i, &p)
		s.results = append(s.results, rs)
		var ms [][]mutation
		for j := range rs {
			ms = append(ms, genMutations(seed, i, j, &rs[j]))
		}
		s.muts = append(s.muts, ms)
		if c, ok := genClinical(seed, i, &p); ok {
			s.clinical = append(s.clinical, &c)
		} else {
			s.clinical = append(s.clinical, nil)
		}
	}
	return s
}

// rows flattens a sample to the []any rows Populate would COPY, per table.
func (s *sample) rows() map[string][][]any {
	m := map[string][][]any{}
	for i := range s.patients {
		m[TablePatient] = append(m[TablePatient], s.patients[i].values())
		for _, x := range s.idents[i] {
			m[TableIdentification] = append(m[TableIdentification], x.values())
		}
		for j := range s.results[i] {
			m[TableResult] = append(m[TableResult], s.results[i][j].values())
			for _, x := range s.muts[i][j] {
				m[TableMutation] = append(m[TableMutation], x.values())
			}
		}
		if c := s.clinical[i]; c != nil {
			m[TableClinicalData] = append(m[TableClinicalData], c.values())
		}
	}
	return m
}

var corpus = generate(20260630, 20000)

func frac(n, of int) float64 { return float64(n) / float64(of) }

func TestDeterministic(t *testing.T) {
	a := generate(42, 300).rows()
	b := generate(42, 300).rows()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed produced different rows")
	}
	c := generate(43, 300).rows()
	if reflect.DeepEqual(a[TablePatient][0], c[TablePatient][0]) {
		t.Fatal("different seeds produced the same first patient")
	}
	// Patient i does not depend on how many patients are generated.
	p := genPatient(42, 299)
	if !reflect.DeepEqual(p.values(), a[TablePatient][299]) {
		t.Fatal("patient 299 differs when generated alone")
	}
}

func TestColumnsMatchValues(t *testing.T) {
	cols := map[string][]string{
		TablePatient: patientColumns, TableIdentification: identificationColumns,
		TableResult: resultColumns, TableMutation: mutationColumns, TableClinicalData: clinicalColumns,
	}
	rows := generate(1, 200).rows()
	for _, table := range Tables {
		if len(rows[table]) == 0 {
			t.Fatalf("%s: no rows", table)
		}
		for _, r := range rows[table] {
			if len(r) != len(cols[table]) {
				t.Fatalf("%s: %d values for %d columns", table, len(r), len(cols[table]))
			}
		}
		for _, c := range cols[table] {
			if !strings.Contains(schemaSQL, `"`+c+`"`) {
				t.Errorf("%s: column %q not in schema", table, c)
			}
		}
		if !strings.Contains(schemaSQL, `"public"."`+table+`" (`) {
			t.Errorf("table %s not created by schema", table)
		}
	}
}

func TestRowCounts(t *testing.T) {
	var ids, res, muts, clin int
	for i := range corpus.patients {
		ids += len(corpus.idents[i])
		res += len(corpus.results[i])
		for _, m := range corpus.muts[i] {
			muts += len(m)
		}
		if corpus.clinical[i] != nil {
			clin++
		}
	}
	n := len(corpus.patients)
	check := func(what string, got, lo, hi float64) {
		t.Helper()
		if got < lo || got > hi {
			t.Errorf("%s = %.3f, want in [%.2f, %.2f]", what, got, lo, hi)
		}
	}
	check("identifications per patient", frac(ids, n), 0.9, 1.1)
	check("results per patient", frac(res, n), 2.4, 2.9)
	check("mutations per result", frac(muts, res), 0.15, 0.3)
	check("clinical data per patient", frac(clin, n), 0.8, 0.9)
	check("rows per patient", frac(n+ids+res+muts+clin, n), 5, 6.5)
}

var ulidRE = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)

func TestUIDs(t *testing.T) {
	seen := map[string]string{}
	for table, rows := range corpus.rows() {
		for _, r := range rows {
			uid := r[0].(string)
			if !ulidRE.MatchString(uid) {
				t.Fatalf("%s: uid %q is not ULID-shaped", table, uid)
			}
			if prev, dup := seen[uid]; dup {
				t.Fatalf("uid %q in %s and %s", uid, prev, table)
			}
			seen[uid] = table
		}
	}
	// The ULID time prefix is the row's creation time.
	p := corpus.patients[7]
	if got := decodeULIDTime(p.uid); !got.Equal(p.createdAt.Truncate(time.Millisecond)) {
		t.Errorf("uid time %v, created_at %v", got, p.createdAt)
	}
	// Foreign keys point at generated parents.
	for i, p := range corpus.patients {
		for _, x := range corpus.idents[i] {
			if x.patientUID != p.uid {
				t.Fatal("identification patient_uid mismatch")
			}
		}
		for j, x := range corpus.results[i] {
			if x.patientUID != p.uid {
				t.Fatal("result patient_uid mismatch")
			}
			for _, m := range corpus.muts[i][j] {
				if m.resultUID != x.uid {
					t.Fatal("mutation result_uid mismatch")
				}
			}
		}
	}
}

func decodeULIDTime(u string) time.Time {
	var ms int64
	for _, c := range u[:10] {
		ms = ms<<5 | int64(strings.IndexRune(crockford, c))
	}
	return time.UnixMilli(ms).UTC()
}

func TestNames(t *testing.T) {
	has := func(pred func(rune) bool) func(string) bool {
		return func(s string) bool { return strings.IndexFunc(s, pred) >= 0 }
	}
	latinAccent := func(r rune) bool { return r >= 0xC0 && r <= 0x24F || r >= 0x1E00 && r <= 0x1EFF }
	categories := map[string]func(string) bool{
		"latin accent": has(latinAccent),
		"han":          has(func(r rune) bool { return unicode.Is(unicode.Han, r) }),
		"kana":         has(func(r rune) bool { return unicode.Is(unicode.Hiragana, r) }),
		"cyrillic":     has(func(r rune) bool { return unicode.Is(unicode.Cyrillic, r) }),
		"arabic":       has(func(r rune) bool { return unicode.Is(unicode.Arabic, r) }),
		"devanagari":   has(func(r rune) bool { return unicode.Is(unicode.Devanagari, r) }),
		"greek":        has(func(r rune) bool { return unicode.Is(unicode.Greek, r) }),
		"vietnamese":   func(s string) bool { return strings.Contains(s, "Nguyễn") },
		"polish ł":     func(s string) bool { return strings.ContainsAny(s, "łŁ") },
		"nordic":       func(s string) bool { return strings.ContainsAny(s, "øåÅØ") },
		"german ß":     func(s string) bool { return strings.Contains(s, "ß") },
		"apostrophe":   func(s string) bool { return strings.Contains(s, "'") },
		"hyphen":       func(s string) bool { return strings.Contains(s, "-") },
		"space inside": func(s string) bool { return strings.Contains(strings.TrimSpace(s), " ") },
	}
	found := map[string]int{}
	all := map[string]bool{}
	var untrimmed, upper, empty, middleNull int
	n := len(corpus.patients)
	for _, p := range corpus.patients {
		for _, f := range []nstr{p.firstName, p.middleName, p.lastName} {
			if !f.valid {
				continue
			}
			all[strings.TrimSpace(f.s)] = true
			for k, pred := range categories {
				if pred(f.s) {
					found[k]++
				}
			}
			if f.s == "" {
				empty++
			} else if strings.TrimSpace(f.s) != f.s {
				untrimmed++
			}
			if len(f.s) > 3 && f.s == strings.ToUpper(f.s) && f.s != strings.ToLower(f.s) {
				upper++
			}
		}
		if !p.middleName.valid {
			middleNull++
		}
	}
	for k := range categories {
		if found[k] == 0 {
			t.Errorf("no names with %s", k)
		}
	}
	if found["latin accent"] < n/20 {
		t.Errorf("only %d accented names", found["latin accent"])
	}
	for _, want := range []string{"John", "Jon", "Jonathan", "Jane", "Jean", "June", "Joan", "Smith",
		"Smyth", "Schmidt", "Catherine", "Katherine", "Kathryn", "Stephen", "Steven", "José", "María",
		"Núñez", "Hélène", "O'Brien", "D'Angelo", "Smith-Jones", "Jean-Luc", "Müller", "Groß", "Søren",
		"Åse", "Łukasz", "Wójcik", "Иван", "Петров", "王", "伟", "佐藤", "健", "محمد", "فاطمة", "प्रिया",
		"Nguyễn", "Muhammad", "Mohammed", "Conceição"} {
		if !all[want] {
			t.Errorf("name %q never generated", want)
		}
	}
	if f := frac(untrimmed, 3*n); f < 0.001 || f > 0.02 {
		t.Errorf("untrimmed names fraction %.4f", f)
	}
	if upper == 0 || empty == 0 {
		t.Errorf("messy names: %d upper-case, %d empty", upper, empty)
	}
	if f := frac(middleNull, n); f < 0.3 || f > 0.8 {
		t.Errorf("NULL middle_name fraction %.3f", f)
	}
}

func TestPatientFields(t *testing.T) {
	n := len(corpus.patients)
	var emailNull, emailEmpty, dobNull, feb29, ageExact, ageNull, est int
	genders := map[string]int{}
	for _, p := range corpus.patients {
		switch {
		case !p.email.valid:
			emailNull++
		case p.email.s == "":
			emailEmpty++
		default:
			if strings.Count(p.email.s, "@") != 1 || strings.IndexFunc(p.email.s, func(r rune) bool { return r > unicode.MaxASCII }) >= 0 {
				t.Errorf("odd e-mail %q", p.email.s)
			}
		}
		if p.age < 0 {
			ageNull++
		}
		if p.dobEstimated {
			est++
		}
		genders[p.gender.s]++
		if p.dob.IsZero() {
			dobNull++
			continue
		}
		if p.dob.Before(minDOB) || p.dob.After(p.createdAt) {
			t.Errorf("dob %v outside [1920, %v]", p.dob, p.createdAt)
		}
		if p.dob.Month() == time.February && p.dob.Day() == 29 {
			feb29++
		}
		want := yearsBetween(p.dob, p.createdAt)
		if p.age == want {
			ageExact++
		} else if p.age >= 0 && math.Abs(float64(p.age-want)) > 1 {
			t.Errorf("age %d for dob %v registered %v", p.age, p.dob, p.createdAt)
		}
		if p.updatedAt.Before(p.createdAt) || p.createdAt.After(refTime) {
			t.Errorf("timestamps out of order: %v %v", p.createdAt, p.updatedAt)
		}
	}
	if f := frac(emailNull, n); f < 0.17 || f > 0.23 {
		t.Errorf("NULL email fraction %.3f", f)
	}
	if f := frac(emailEmpty, n); f < 0.002 || f > 0.01 {
		t.Errorf("empty email fraction %.4f", f)
	}
	if f := frac(dobNull, n); f < 0.005 || f > 0.02 {
		t.Errorf("NULL dob fraction %.4f", f)
	}
	if feb29 < 20 {
		t.Errorf("only %d 29 February birthdays", feb29)
	}
	if f := frac(ageExact, n-dobNull); f < 0.95 {
		t.Errorf("age consistent with dob for only %.3f", f)
	}
	if ageNull == 0 || est == 0 {
		t.Errorf("NULL ages %d, estimated dobs %d", ageNull, est)
	}
	if frac(genders["Male"]+genders["Female"], n) < 0.95 || genders["Missing"] == 0 {
		t.Errorf("genders %v", genders)
	}
}

func TestPhones(t *testing.T) {
	var mobiles []string
	var null, invalid int
	for _, p := range corpus.patients {
		if !p.phoneMobile.valid {
			null++
			continue
		}
		mobiles = append(mobiles, p.phoneMobile.s)
		digits := strings.Count(strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return 'd'
			}
			return -1
		}, p.phoneMobile.s), "d")
		if digits < 7 {
			invalid++
		}
		if p.phoneHome.valid && p.phoneHome.s != "" && strings.ContainsAny(p.phoneHome.s, "#%~") {
			t.Fatalf("unexpanded template %q", p.phoneHome.s)
		}
	}
	all := strings.Join(mobiles, "\n")
	for _, re := range []string{
		`\(\d{3}\) 555-01\d\d`, `\d{3}\.555\.01\d\d`, `\+1 \d{3} 555 01\d\d`, // US
		`07700 900\d{3}`, `\+44 7700 900\d{3}`, // UK
		`\+254 7\d\d \d{6}`, `07\d\d \d{6}`, `\+256 7\d\d \d{6}`, `\+27 \d\d \d{3} \d{4}`, // KE UG ZA
		`\+49 1\d\d \d{7}`, `\+91 [6-9]\d{4} \d{5}`, `\+33 6 39 98 \d\d \d\d`, // DE IN FR
		`\+7 9\d\d \d{3}-\d\d-\d\d`, `\+86 1\d\d \d{4} \d{4}`, // RU CN
	} {
		if !regexp.MustCompile(`(?m)^` + re + `$`).MatchString(all) {
			t.Errorf("no mobile matching %s", re)
		}
	}
	var hb strings.Builder
	for _, p := range corpus.patients {
		hb.WriteString(p.phoneHome.s + "\n")
	}
	homes := hb.String()
	for _, want := range []string{"020 7946 0", "+44 20 7946 0", "030 23125"} {
		if !strings.Contains(homes, want) {
			t.Errorf("no home phone containing %q", want)
		}
	}
	n := len(corpus.patients)
	if f := frac(null, n); f < 0.03 || f > 0.08 {
		t.Errorf("NULL mobile fraction %.3f", f)
	}
	if f := frac(invalid, n); f < 0.003 || f > 0.02 {
		t.Errorf("invalid mobile fraction %.4f", f)
	}
}

func TestIdentifications(t *testing.T) {
	byType := map[string][]string{}
	for _, xs := range corpus.idents {
		for _, x := range xs {
			name, ok := IdentificationTypes[x.identificationUID]
			if !ok {
				t.Fatalf("unknown identification_uid %q", x.identificationUID)
			}
			byType[name] = append(byType[name], x.value)
		}
	}
	for _, name := range []string{"National ID", "Passport", "Social Security Number", "NHS Number",
		"Medical Record Number", "Birth Certificate"} {
		if len(byType[name]) == 0 {
			t.Errorf("no %s values", name)
		}
	}
	ssn := regexp.MustCompile(`^\d{3}-\d{2}-\d{4}$`)
	ok := 0
	for _, v := range byType["Social Security Number"] {
		if ssn.MatchString(v) {
			ok++
		}
	}
	if ok < len(byType["Social Security Number"])*9/10 {
		t.Errorf("only %d of %d SSNs look like 123-45-6789", ok, len(byType["Social Security Number"]))
	}
	for _, v := range byType["NHS Number"] {
		if !strings.HasPrefix(strings.TrimSpace(v), "999") {
			t.Errorf("NHS number %q outside the 999 test range", v)
		}
	}
}

func TestNumericOf(t *testing.T) {
	for in, want := range map[string]string{
		"5.4": "5.4", "120": "120", "0.0032": "0.0032", "-1.5": "-1.5", "12345678": "12345678",
		"123456789": "", "0.00001": "", "5,4": "", "< 20": "", "5.": "", ".5": "", "": "", "1e3": "",
		"Positive": "", "10.7 umol/L": "", " 5.4": "",
	} {
		if got := numericOf(in); got != want {
			t.Errorf("numericOf(%q) = %q, want %q", in, got, want)
		}
	}
	n := toNumeric("-12.0340")
	if n.Int.Int64() != -120340 || n.Exp != -4 || !n.Valid {
		t.Errorf("toNumeric: %+v", n)
	}
}

func TestResults(t *testing.T) {
	values := map[string]int{}
	var total, null, numeric, long int
	statuses := map[string]int{}
	for _, rs := range corpus.results {
		for _, x := range rs {
			total++
			statuses[x.status]++
			if AnalysisNames[x.analysisUID] == "" || x.sampleUID == "" {
				t.Fatalf("result without analysis or sample: %+v", x)
			}
			if !x.value.valid {
				null++
				if x.numeric != "" {
					t.Fatal("numeric without result")
				}
				continue
			}
			values[x.value.s]++
			if x.numeric != numericOf(x.value.s) {
				t.Fatalf("result %q has numeric %q", x.value.s, x.numeric)
			}
			if x.numeric != "" {
				numeric++
			}
			if len(x.value.s) > 60 {
				long++
			}
			if !x.dateVerified.IsZero() && x.dateVerified.Before(x.dateSubmitted) {
				t.Fatal("verified before submitted")
			}
		}
	}
	for _, want := range []string{"Positive", "Negative", "Not detected", "Reactive", "Non-reactive",
		"Target Not Detected", "Detected"} {
		if values[want] == 0 {
			t.Errorf("no %q results", want)
		}
	}
	if f := frac(numeric, total); f < 0.3 || f > 0.7 {
		t.Errorf("numeric fraction %.3f", f)
	}
	if null == 0 || long == 0 || statuses["pending"] == 0 || statuses["approved"] < total/2 {
		t.Errorf("null %d, long %d, statuses %v", null, long, statuses)
	}
}

func TestMutations(t *testing.T) {
	var n int
	for i, rs := range corpus.results {
		for j, x := range rs {
			ms := corpus.muts[i][j]
			if len(ms) == 0 {
				continue
			}
			n += len(ms)
			if last := ms[len(ms)-1]; last.after.s != x.value.s {
				t.Fatalf("last mutation after %q, result %q", last.after.s, x.value.s)
			}
			prev := x.createdAt
			for k, m := range ms {
				if m.before.valid && m.before.s == m.after.s {
					t.Errorf("no-op mutation %q (%s)", m.before.s, m.mutation)
				}
				if k > 0 && m.before.s != ms[k-1].after.s {
					t.Errorf("mutation chain broken: %q then %q", ms[k-1].after.s, m.before.s)
				}
				if m.date.Before(prev) {
					t.Errorf("mutation dated %v before %v", m.date, prev)
				}
				prev = m.date
				if m.mutation == "" {
					t.Error("empty mutation description")
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no mutations")
	}
}

func TestClinical(t *testing.T) {
	var vitalsNull, notesNull, ctxNull, nonASCII, phiInNotes, n int
	contexts := map[string]bool{}
	for i, c := range corpus.clinical {
		if c == nil {
			continue
		}
		n++
		if !c.vitals.valid {
			vitalsNull++
		} else {
			var v struct {
				BP *struct {
					Systolic, Diastolic int
				}
				Pulse  *int
				TempC  *float64 `json:"temp_c"`
				SpO2   *int
				Weight *float64 `json:"weight_kg"`
				Notes  *string
			}
			if err := json.Unmarshal([]byte(c.vitals.s), &v); err != nil {
				t.Fatalf("vitals %q: %v", c.vitals.s, err)
			}
			if v.BP != nil && v.BP.Diastolic >= v.BP.Systolic {
				t.Errorf("bp %+v", *v.BP)
			}
		}
		if !c.otherContext.valid {
			ctxNull++
		} else {
			if !json.Valid([]byte(c.otherContext.s)) {
				t.Fatalf("other_context %q is not valid JSON", c.otherContext.s)
			}
			contexts[c.otherContext.s] = true
		}
		if !c.treatmentNotes.valid {
			notesNull++
		} else if p := corpus.patients[i]; strings.Contains(c.treatmentNotes.s, p.plainFirst) {
			phiInNotes++
		}
		if strings.IndexFunc(c.symptomsRaw.s, func(r rune) bool { return r > unicode.MaxASCII }) >= 0 {
			nonASCII++
		}
		if c.patientUID != corpus.patients[i].uid {
			t.Fatal("clinical patient_uid mismatch")
		}
	}
	for _, want := range []string{`{"referral": "GP",  "urgent":false}`, `{"a": 1, "a": 2}`,
		`  {"trailing": "whitespace"}  `, `null`, `[1, 2,3]`} {
		if !contexts[want] {
			t.Errorf("other_context %q never generated", want)
		}
	}
	if vitalsNull == 0 || notesNull == 0 || ctxNull == 0 || nonASCII == 0 || phiInNotes == 0 {
		t.Errorf("vitals NULL %d, notes NULL %d, context NULL %d, non-ASCII symptoms %d, names in notes %d",
			vitalsNull, notesNull, ctxNull, nonASCII, phiInNotes)
	}
}

// TestPopulateDatabase runs CreateSchema and Populate against a real server
// when PGPHI_TEST_DATABASE_URL is set. It works in a scratch database that it
// creates and drops, so it never touches existing data.
func TestPopulateDatabase(t *testing.T) {
	url := os.Getenv("PGPHI_TEST_DATABASE_URL")
	if url == "" {
		t.Skip("PGPHI_TEST_DATABASE_URL not set")
	}
	ctx := context.Background()
	conn := scratchDB(t, url)

	if err := CreateSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := CreateSchema(ctx, conn); err != nil { // idempotent
		t.Fatal(err)
	}
	catalog := func() []string {
		var defs []string
		rows, err := conn.Query(ctx, `
			SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
			FROM pg_constraint WHERE connamespace = 'public'::regnamespace
			UNION ALL
			SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
			ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				t.Fatal(err)
			}
			defs = append(defs, d)
		}
		return defs
	}
	before := catalog()
	if len(before) < 14 {
		t.Fatalf("schema has only %d constraints and indexes: %v", len(before), before)
	}
	progress := map[string]int64{}
	const seed, patients = 7, 1000
	counts, err := Populate(ctx, conn, Options{Patients: patients, Seed: seed,
		Progress: func(table string, rows int64) { progress[table] = rows }})
	if err != nil {
		t.Fatal(err)
	}
	if after := catalog(); !reflect.DeepEqual(before, after) {
		t.Errorf("constraints and indexes changed:\n%v\n%v", before, after)
	}
	want := generate(seed, patients).rows()
	got := map[string]int64{TablePatient: counts.Patients, TableIdentification: counts.Identifications,
		TableResult: counts.Results, TableMutation: counts.Mutations, TableClinicalData: counts.ClinicalData}
	for _, table := range Tables {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM "public".`+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != int64(len(want[table])) || got[table] != n || progress[table] != n {
			t.Errorf("%s: %d rows in table, Counts %d, progress %d, generated %d", table, n, got[table],
				progress[table], len(want[table]))
		}
	}

	// json is stored byte-for-byte, numerics and text survive.
	var mismatches int
	for _, r := range want[TableClinicalData] {
		if r[8] == nil {
			continue
		}
		var text string
		if err := conn.QueryRow(ctx, `SELECT other_context::text FROM clinical_data WHERE uid = $1`, r[0]).Scan(&text); err != nil {
			t.Fatal(err)
		}
		if text != r[8].(string) {
			mismatches++
			t.Errorf("other_context %q stored as %q", r[8], text)
		}
		if mismatches > 3 {
			break
		}
	}
	var bad int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM analysis_result
		WHERE (result_numeric IS NULL) <> (result IS NULL OR result !~ '^-?[0-9]{1,8}(\.[0-9]{1,4})?$')
		   OR result_numeric <> CASE WHEN result ~ '^-?[0-9]{1,8}(\.[0-9]{1,4})?$' THEN result::numeric END`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("%d results whose result_numeric disagrees with result", bad)
	}
	for _, r := range want[TablePatient][:50] {
		var first, last *string
		if err := conn.QueryRow(ctx, `SELECT first_name, last_name FROM patient WHERE uid = $1`, r[0]).Scan(&first, &last); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(deref(first)) != fmt.Sprint(r[3]) || fmt.Sprint(deref(last)) != fmt.Sprint(r[5]) {
			t.Errorf("patient %s: stored %v %v, generated %v %v", r[0], deref(first), deref(last), r[3], r[5])
		}
	}
	var feb29 int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM patient WHERE to_char(date_of_birth, 'MM-DD') = '02-29'`).Scan(&feb29); err != nil {
		t.Fatal(err)
	}
	if feb29 == 0 {
		t.Error("no 29 February birthdays stored")
	}
	// A second Populate with the same seed collides on uids and rolls back.
	if _, err := Populate(ctx, conn, Options{Patients: 10, Seed: seed}); err == nil {
		t.Error("second Populate with the same seed succeeded")
	}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// scratchDB creates a uniquely named database on the server at url, returns
// a connection to it and drops it when the test ends.
func scratchDB(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	name := fmt.Sprintf("pgphi_demo_test_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Database = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			tb.Error(err)
		}
		admin.Close(ctx)
	})
	return conn
}

// BenchmarkPopulate measures CreateSchema + Populate of DefaultPatients
// patients into a scratch database per iteration (PGPHI_TEST_DATABASE_URL).
func BenchmarkPopulate(b *testing.B) {
	url := os.Getenv("PGPHI_TEST_DATABASE_URL")
	if url == "" {
		b.Skip("PGPHI_TEST_DATABASE_URL not set")
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		conn := scratchDB(b, url)
		if err := CreateSchema(ctx, conn); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c, err := Populate(ctx, conn, Options{Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(c.Total()), "rows/op")
	}
}

// BenchmarkGenerate measures row generation alone, per patient.
func BenchmarkGenerate(b *testing.B) {
	i := 0
	for b.Loop() {
		p := genPatient(1, i)
		_ = p.values()
		for _, x := range genIdentifications(1, i, &p) {
			_ = x.values()
		}
		for j, x := range genResults(1, i, &p) {
			_ = x.values()
			for _, m := range genMutations(1, i, j, &x) {
				_ = m.values()
			}
		}
		if c, ok := genClinical(1, i, &p); ok {
			_ = c.values()
		}
		i++
	}
}
