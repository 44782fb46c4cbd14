package demo

import (
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// analysis is one test in the lab's catalogue.
type analysis struct {
	uid    string
	name   string
	weight int
	gen    func(r *rng) string
}

func numeric(lo, hi float64, decimals int) func(r *rng) string {
	return func(r *rng) string {
		return strconv.FormatFloat(lo+(hi-lo)*r.float(), 'f', decimals, 64)
	}
}

func qualitative(values []string, w []int) func(r *rng) string {
	return func(r *rng) string { return values[weighted(r, w)] }
}

var analyses = []*analysis{
	{name: "HIV-1 Viral Load", weight: 14, gen: func(r *rng) string {
		switch x := r.intn(100); {
		case x < 40:
			return pick(r, []string{"Target Not Detected", "Not detected", "TND"})
		case x < 55:
			return pick(r, []string{"< 20", "<20", "< 40", "<40 copies/mL", "<LDL"})
		case x < 98:
			// log-uniform 20 .. 10,000,000 copies/mL
			return strconv.Itoa(int(math.Pow(10, 1.3+5.7*r.float())))
		default:
			return "> 10000000"
		}
	}},
	{name: "CD4 Count", weight: 8, gen: func(r *rng) string { return strconv.Itoa(r.between(5, 1500)) }},
	{name: "Haemoglobin", weight: 12, gen: numeric(4, 18.5, 1)},
	{name: "Glucose (fasting)", weight: 8, gen: numeric(2.5, 22, 1)},
	{name: "Creatinine", weight: 7, gen: func(r *rng) string { return strconv.Itoa(r.between(35, 900)) }},
	{name: "HbA1c", weight: 4, gen: numeric(4, 14, 1)},
	{name: "ALT", weight: 5, gen: func(r *rng) string { return strconv.Itoa(r.between(5, 400)) }},
	{name: "Potassium", weight: 4, gen: numeric(2.5, 6.8, 1)},
	{name: "TSH", weight: 3, gen: numeric(0.005, 20, 3)},
	{name: "Total Cholesterol", weight: 3, gen: numeric(2.5, 9.5, 2)},
	{name: "Malaria RDT", weight: 8, gen: qualitative([]string{"Negative", "Positive", "Invalid", "P. falciparum positive"}, []int{70, 22, 2, 6})},
	{name: "SARS-CoV-2 PCR", weight: 5, gen: qualitative([]string{"Not detected", "Detected", "Inconclusive", "Invalid"}, []int{80, 15, 4, 1})},
	{name: "HIV Rapid Test", weight: 6, gen: qualitative([]string{"Non-reactive", "Reactive", "Indeterminate"}, []int{85, 13, 2})},
	{name: "Syphilis RPR", weight: 3, gen: qualitative([]string{"Non-reactive", "Reactive 1:2", "Reactive 1:8", "Reactive 1:32"}, []int{88, 5, 5, 2})},
	{name: "HBsAg", weight: 3, gen: qualitative([]string{"Negative", "Positive"}, []int{92, 8})},
	{name: "GeneXpert MTB/RIF", weight: 3, gen: qualitative([]string{"MTB not detected",
		"MTB detected, rifampicin resistance not detected", "MTB detected, rifampicin resistance detected",
		"MTB detected trace, rifampicin resistance indeterminate", "Error", "Invalid"}, []int{78, 14, 2, 2, 2, 2})},
	{name: "Urinalysis (dipstick)", weight: 2, gen: func(r *rng) string {
		return "Protein: " + pick(r, []string{"negative", "trace", "+", "++", "+++"}) +
			"; Glucose: " + pick(r, []string{"negative", "negative", "+", "++"}) +
			"; Blood: " + pick(r, []string{"negative", "trace", "+"}) +
			"; Leucocytes: " + pick(r, []string{"negative", "+", "++"}) +
			"; Nitrite: " + pick(r, []string{"negative", "positive"}) +
			"; pH " + strconv.FormatFloat(5+0.5*float64(r.intn(7)), 'f', 1, 64) +
			"; SG " + strconv.FormatFloat(1+0.005*float64(r.between(1, 6)), 'f', 3, 64)
	}},
	{name: "Blood Culture", weight: 2, gen: func(r *rng) string {
		return pick(r, []string{
			"No growth after 5 days of incubation.",
			"No growth after 5 days of incubation.",
			"Staphylococcus aureus isolated. Sensitive to: cloxacillin, clindamycin, vancomycin. Resistant to: penicillin. MRSA screen negative.",
			"Escherichia coli isolated (ESBL producer). Sensitive to: meropenem, amikacin, nitrofurantoin. Resistant to: ceftriaxone, ciprofloxacin, co-trimoxazole. Clinician informed by phone.",
			"Klebsiella pneumoniae isolated. Sensitive to: meropenem. Resistant to: ampicillin, ceftriaxone, gentamicin. Please contact the laboratory to discuss.",
			"Coagulase-negative staphylococci isolated from 1 of 2 bottles; probable contaminant. Repeat culture if clinically indicated.",
			"Salmonella Typhi isolated. Sensitive to: azithromycin, ceftriaxone. Reduced susceptibility to ciprofloxacin. Notifiable: public health informed.",
		})
	}},
}

var analysisWeights = func() []int {
	w := make([]int, len(analyses))
	for i, a := range analyses {
		a.uid = fixedUID("analysis:" + a.name)
		w[i] = a.weight
	}
	return w
}()

// AnalysisNames maps the analysis_uid values used in analysis_result to the
// name of the test.
var AnalysisNames = func() map[string]string {
	m := make(map[string]string, len(analyses))
	for _, a := range analyses {
		m[a.uid] = a.name
	}
	return m
}()

type result struct {
	uid, patientUID, sampleUID, analysisUID string
	analysis                                *analysis
	value                                   nstr
	numeric                                 string // "" when not numeric
	status                                  string
	retest, reportable                      bool
	createdAt                               time.Time
	dateSubmitted, dateVerified             time.Time // zero when NULL
}

var resultColumns = []string{"uid", "patient_uid", "sample_uid", "analysis_uid", "result", "result_numeric",
	"status", "retest", "reportable", "date_submitted", "date_verified", "created_at"}

func (x *result) values() []any {
	var num, sub, ver any
	if x.numeric != "" {
		num = toNumeric(x.numeric)
	}
	if !x.dateSubmitted.IsZero() {
		sub = x.dateSubmitted
	}
	if !x.dateVerified.IsZero() {
		ver = x.dateVerified
	}
	return []any{x.uid, x.patientUID, x.sampleUID, x.analysisUID, x.value.value(), num, x.status,
		x.retest, x.reportable, sub, ver, x.createdAt}
}

// numericOf returns s when it is a plain decimal number that fits
// numeric(12,4) (at most 8 integer digits, at most 4 decimals), else "".
func numericOf(s string) string {
	intPart, frac, hasDot := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	if neg {
		intPart = intPart[1:]
	}
	if intPart == "" || len(intPart) > 8 || len(frac) > 4 || (hasDot && frac == "") {
		return ""
	}
	for _, part := range []string{intPart, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return ""
			}
		}
	}
	return s
}

// toNumeric converts a string accepted by numericOf to a pgtype.Numeric.
func toNumeric(s string) pgtype.Numeric {
	intPart, frac, _ := strings.Cut(s, ".")
	var n big.Int
	n.SetString(intPart+frac, 10)
	return pgtype.Numeric{Int: &n, Exp: int32(-len(frac)), Valid: true}
}

// resultStatuses are Felicity's result states.
var (
	resultStatuses = []string{"pending", "submitted", "approved", "retracted", "cancelled", "referred"}
	statusWeights  = []int{8, 12, 70, 3, 4, 3}
)

// genResults returns the analysis results of patient p (number i); about
// 2.6 per patient, grouped into one to three samples.
func genResults(seed int64, i int, p *patient) []result {
	r := newRNG(seed, streamResults, i, 0)
	n := weighted(&r, []int{10, 16, 24, 22, 14, 9, 5})
	if n == 0 {
		return nil
	}
	out := make([]result, 0, n)
	samples := 1
	if n > 2 {
		samples = r.between(1, 3)
	}
	var sampleUID string
	var sampleTime time.Time
	for k := 0; k < n; k++ {
		if k == 0 || (samples > 1 && r.intn(n) < samples) {
			sampleTime = r.randomTime(p.createdAt, refTime)
			sampleUID = r.ulid(sampleTime)
		}
		a := analyses[weighted(&r, analysisWeights)]
		x := result{
			patientUID:  p.uid,
			sampleUID:   sampleUID,
			analysisUID: a.uid,
			analysis:    a,
			status:      resultStatuses[weighted(&r, statusWeights)],
			reportable:  true,
			createdAt:   sampleTime.Add(time.Duration(r.between(60, 7200)) * time.Second),
		}
		x.uid = r.ulid(x.createdAt)
		if x.status != "pending" && x.status != "cancelled" || r.chance(0.2) {
			v := a.gen(&r)
			switch y := r.intn(1000); {
			case y < 5 && numericOf(v) != "": // decimal comma, as typed on some analysers
				v = strings.Replace(v, ".", ",", 1)
			case y < 15 && numericOf(v) != "": // unit typed into the result
				v += pick(&r, []string{" g/dL", " mmol/L", " U/L", " umol/L", " cells/uL"})
			}
			x.value = some(v)
			x.numeric = numericOf(v)
		}
		if x.status != "pending" {
			x.dateSubmitted = x.createdAt.Add(time.Duration(r.between(600, 3*86400)) * time.Second)
		}
		if x.status == "approved" || x.status == "retracted" {
			x.dateVerified = x.dateSubmitted.Add(time.Duration(r.between(300, 2*86400)) * time.Second)
		}
		if x.status == "retracted" {
			x.reportable = false
			x.retest = r.chance(0.8)
		} else if x.status == "cancelled" {
			x.reportable = false
		}
		out = append(out, x)
	}
	return out
}

type mutation struct {
	uid, resultUID  string
	before, after   nstr
	mutation        string
	date            time.Time
	resultCreatedAt time.Time
}

var mutationColumns = []string{"uid", "result_uid", "before", "after", "mutation", "date"}

func (m *mutation) values() []any {
	return []any{m.uid, m.resultUID, m.before.value(), m.after.value(), m.mutation, m.date}
}

var synonyms = map[string][]string{
	"Negative":            {"neg", "NEG", "-ve", "Neg.", "negative"},
	"Positive":            {"pos", "POS", "+ve", "Pos.", "positive"},
	"Not detected":        {"ND", "not detected", "Not Detected", "NEG"},
	"Target Not Detected": {"TND", "Not detected", "target not detected"},
	"Detected":            {"DET", "detected", "POS"},
	"Non-reactive":        {"NR", "Non reactive", "nonreactive", "Negative"},
	"Reactive":            {"R", "reactive", "Positive"},
	"MTB not detected":    {"MTB NOT DETECTED", "Not detected", "MTB neg"},
}

// genMutations returns the edit history (before/after) of result x, which is
// result number j of patient i. The last mutation's after equals the
// result's current value. About one result in five has been mutated.
func genMutations(seed int64, i, j int, x *result) []mutation {
	if !x.value.valid || x.value.s == "" {
		return nil
	}
	r := newRNG(seed, streamMutation, i, j)
	if !r.chance(0.2) {
		return nil
	}
	n := 1
	if r.chance(0.15) {
		n = 2
	}
	after := x.value.s
	end := x.dateVerified
	if end.IsZero() {
		end = x.dateSubmitted
	}
	if end.IsZero() || !end.After(x.createdAt) {
		end = x.createdAt.Add(time.Hour)
	}
	out := make([]mutation, n)
	for k := n - 1; k >= 0; k-- {
		before, why := r.mutateFrom(x, after)
		out[k] = mutation{resultUID: x.uid, before: some(before), after: some(after), mutation: why}
		after = before
	}
	// Dates in order, all between the result's creation and verification.
	t := x.createdAt
	for k := range out {
		span := end.Sub(t) / time.Duration(n-k+1)
		if span <= 0 {
			span = time.Second
		}
		t = t.Add(time.Duration(1+r.intn(max(1, int(span/time.Second)))) * time.Second)
		out[k].date = t
		out[k].uid = r.ulid(t)
		out[k].resultCreatedAt = x.createdAt
	}
	if r.chance(0.03) { // first entry was blank
		out[0].before = nstr{}
	}
	return out
}

// mutateFrom invents the value a result had before it was changed to after,
// and a description of the change.
func (r *rng) mutateFrom(x *result, after string) (before, why string) {
	if syn, ok := synonyms[after]; ok && r.chance(0.7) {
		return pick(r, syn), pick(r, []string{"Result harmonised to coded value",
			"Free-text result mapped to result option", "Interpretation standardised by reviewer"})
	}
	if strings.HasPrefix(after, "<") || after == "Target Not Detected" || after == "TND" || after == "<LDL" {
		return strconv.Itoa(r.between(1, 39)), "Result below the lower detection limit: reported as '" +
			after + "'"
	}
	if strings.HasPrefix(after, ">") {
		return strconv.Itoa(r.between(10_000_001, 25_000_000)), "Result above the upper detection limit"
	}
	if num := numericOf(after); num != "" {
		f, _ := strconv.ParseFloat(num, 64)
		intPart, frac, _ := strings.Cut(num, ".")
		switch r.intn(5) {
		case 0:
			if frac != "" {
				return intPart + "," + frac, "Decimal separator normalised"
			}
			return num + ".0", "Trailing zero removed"
		case 1:
			return strconv.FormatFloat(f*10, 'f', len(frac), 64),
				"Transcription error corrected (decimal point misplaced)"
		case 2:
			if len(num) > 1 && num[len(num)-1] != num[len(num)-2] {
				b := []byte(num)
				b[len(b)-1], b[len(b)-2] = b[len(b)-2], b[len(b)-1]
				if b[len(b)-2] != '.' && b[len(b)-1] != '.' && numericOf(string(b)) != "" {
					return string(b), "Transposed digits corrected on review"
				}
			}
			return num + " " + pick(r, []string{"g/dL", "mmol/L", "U/L"}), "Unit text stripped from result"
		case 3:
			return strconv.FormatFloat(f+r.float()*0.0999, 'f', len(frac)+2, 64),
				"Rounded to reporting precision"
		default:
			before = strconv.FormatFloat(f*(0.7+0.6*r.float()), 'f', len(frac), 64)
			if before == num { // too small to change at this precision
				before = strconv.FormatFloat(f+math.Pow10(-len(frac)), 'f', len(frac), 64)
			}
			return before, "Result amended after re-run (instrument flag: " +
				pick(r, []string{"haemolysed", "clot detected", "QC failure", "short sample"}) + ")"
		}
	}
	if len(after) > 40 {
		cut := strings.LastIndex(after[:len(after)/2], " ")
		if cut < 1 {
			cut = len(after) / 2
		}
		return after[:cut] + "...", "Comment completed by verifying scientist"
	}
	why = pick(r, []string{"Result amended after repeat testing", "Corrected: wrong sample tested",
		"Result edited by supervisor"})
	for k := 0; k < 8; k++ {
		if before = x.analysis.gen(r); before != after {
			return before, why
		}
	}
	return strings.ToUpper(after) + " ", "Whitespace and case normalised"
}
