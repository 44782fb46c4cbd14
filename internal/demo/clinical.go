package demo

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

type clinical struct {
	uid, patientUID   string
	symptomsRaw       nstr
	indication        nstr
	pregnant, feeding *bool
	vitals            nstr // jsonb
	treatmentNotes    nstr
	otherContext      nstr // json, kept byte-for-byte
	createdAt         time.Time
}

var clinicalColumns = []string{"uid", "patient_uid", "symptoms_raw", "clinical_indication",
	"pregnancy_status", "breast_feeding", "vitals", "treatment_notes", "other_context", "created_at"}

func (c *clinical) values() []any {
	var preg, feed any
	if c.pregnant != nil {
		preg = *c.pregnant
	}
	if c.feeding != nil {
		feed = *c.feeding
	}
	return []any{c.uid, c.patientUID, c.symptomsRaw.value(), c.indication.value(), preg, feed,
		c.vitals.value(), c.treatmentNotes.value(), c.otherContext.value(), c.createdAt}
}

var symptomsEN = []string{"fever", "headache", "cough for 2 weeks", "dry cough", "night sweats",
	"weight loss", "abdominal pain", "diarrhoea", "diarrhea x2 days", "vomiting", "fatigue",
	"rash on both arms", "painful urination", "shortness of breath", "joint pains", "chest pain",
	"dizziness", "no complaints", "loss of appetite", "swollen lymph nodes (neck)", "sore throat",
	"chills and rigors", "yellow eyes", "blurred vision", "frequent urination, excessive thirst",
	"lower back pain", "palpitations", "SOB on exertion", "productive cough, green sputum",
	"generalised body weakness", "pruritus", "oral thrush", "bloody stools"}

var symptomsOther = map[string][]string{
	"es": {"fiebre y tos desde hace 3 días", "dolor de cabeza intenso", "náuseas y vómitos",
		"dolor abdominal, diarrea", "cansancio general, pérdida de peso", "tos seca, dificultad para respirar"},
	"fr": {"fièvre, toux sèche, fatigue depuis une semaine", "céphalées", "douleurs abdominales",
		"éruption cutanée prurigineuse", "perte d'appétit et sueurs nocturnes", "brûlures mictionnelles"},
	"sw": {"homa, kikohozi, maumivu ya kichwa", "kuhara kwa siku tatu", "kutapika", "maumivu ya tumbo",
		"kupungua uzito", "homa na baridi kali"},
	"de": {"Fieber seit 2 Tagen, Husten", "Kopfschmerzen", "Bauchschmerzen und Übelkeit",
		"Müdigkeit, Gewichtsverlust", "Atemnot bei Belastung"},
	"pl": {"gorączka i kaszel od tygodnia", "ból głowy", "bóle brzucha", "duszność"},
	"ru": {"температура 38,5, кашель", "головная боль", "слабость, потеря веса", "боль в животе"},
	"zh": {"发热三天，咳嗽", "头痛", "腹泻两天", "乏力，体重减轻", "胸闷气短"},
	"ar": {"حمى وسعال منذ ثلاثة أيام", "صداع", "ألم في البطن", "إسهال وقيء"},
	"hi": {"तीन दिन से बुखार और खांसी", "सिरदर्द", "पेट दर्द", "कमज़ोरी"},
	"vi": {"sốt và ho 3 ngày", "đau đầu", "tiêu chảy", "mệt mỏi, sụt cân"},
}

var indications = []string{"Routine viral load monitoring (on ART)", "Suspected malaria",
	"Pre-operative work-up", "Antenatal profile", "Follow-up after treatment failure",
	"Diabetes review", "Suspected TB", "Contact tracing", "Fever of unknown origin", "Annual check-up",
	"Renal function monitoring (on TDF)", "Suspected UTI", "Sepsis screen", "Anaemia work-up",
	"Occupational screening", "PrEP initiation", "Post-exposure prophylaxis baseline",
	"R/O COVID-19", "Hypertension follow-up", "Thyroid function follow-up", "Query hepatitis B",
	"Child failing to thrive", "Pre-employment medical", "Insurance medical"}

var treatmentSentences = []string{
	"Started on artemether-lumefantrine 80/480 mg BD x3 days.",
	"On TDF/3TC/DTG since 2019; adherence reported good.",
	"On AZT/3TC/NVP, switched to TLD in 2021.",
	"Metformin 500 mg BD, review in 3 months.",
	"Advised oral fluids and rest.",
	"Referred to MOPC for review.",
	"Patient counselled on results.",
	"Repeat VL in 3 months after enhanced adherence counselling (EAC).",
	"Amoxicillin 500 mg TDS x 5/7.",
	"ALLERGIC TO PENICILLIN!",
	"Paracetamol 1 g PRN, max 4 g/24h.",
	"Ceftriaxone 2 g IV OD started empirically pending culture.",
	"Rifafour 4 tabs daily (intensive phase), DOT by family member.",
	"Amlodipine increased to 10 mg daily.",
	"Insulin glargine 20 IU nocte; titrate per home glucose log.",
	"Defaulted last appointment, traced by CHV.",
	"Ferrous sulphate 200 mg TDS + folic acid 5 mg OD.",
	"Co-trimoxazole prophylaxis 960 mg OD.",
	"Patient declined admission; signed discharge against medical advice.",
	"Pt anxious about results, booked for counselling.",
	"Paciente refiere mejoría tras 48 h de tratamiento.",
	"Patient revu à J7, évolution favorable.",
	"Mgonjwa ameelezwa jinsi ya kutumia dawa.",
	"Patient spricht wenig Englisch, Dolmetscher organisiert.",
	"患者已告知复查时间。",
}

var vitalsNotes = []string{"taken seated", "pt agitated, BP repeated", "left arm", "post-exercise",
	"child crying during measurement", "temp axillary", "SpO2 on room air", "measured by triage nurse",
	"Patient refused weight", "après effort", "مريض متوتر"}

var quotedVitalsNotes = func() []string {
	q := make([]string, len(vitalsNotes))
	for i, s := range vitalsNotes {
		b, _ := json.Marshal(s)
		q[i] = string(b)
	}
	return q
}()

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// genClinical returns the clinical data recorded for patient p (number i),
// or ok=false for the ~15% of patients without any.
func genClinical(seed int64, i int, p *patient) (c clinical, ok bool) {
	r := newRNG(seed, streamClinical, i, 0)
	if r.chance(0.15) {
		return c, false
	}
	c.patientUID = p.uid
	c.createdAt = r.randomTime(p.createdAt, refTime)
	c.uid = r.ulid(c.createdAt)

	if !r.chance(0.08) {
		c.symptomsRaw = some(r.symptoms(p.culture.lang))
	}
	if !r.chance(0.05) {
		ind := pick(&r, indications)
		for (ind == "Antenatal profile" && !(p.female && p.age >= 14 && p.age <= 50)) ||
			(ind == "Child failing to thrive" && !(p.age >= 0 && p.age < 16)) {
			ind = pick(&r, indications)
		}
		if r.chance(0.1) {
			ind = strings.ToLower(ind)
		}
		c.indication = some(ind)
	}
	if p.female && p.age >= 14 && p.age <= 50 && r.chance(0.7) {
		preg := r.chance(0.12)
		feed := !preg && r.chance(0.1)
		c.pregnant, c.feeding = &preg, &feed
	}
	if !r.chance(0.15) {
		c.vitals = some(r.vitals(p))
	}
	if !r.chance(0.25) {
		c.treatmentNotes = some(r.treatmentNotes(p))
	}
	if !r.chance(0.3) {
		c.otherContext = some(r.otherContext(p))
	}
	return c, true
}

func (r *rng) symptoms(lang string) string {
	if other := symptomsOther[lang]; other != nil && r.chance(0.35) {
		s := pick(r, other)
		if r.chance(0.3) {
			s += "; " + pick(r, symptomsEN)
		}
		return s
	}
	if r.chance(0.04) { // the odd mixed-language note from a visiting clinician
		for _, l := range []string{"es", "fr", "sw", "zh"} {
			if r.chance(0.4) {
				return pick(r, symptomsEN) + " / " + pick(r, symptomsOther[l])
			}
		}
	}
	n := r.between(1, 4)
	parts := make([]string, 0, n)
	for len(parts) < n {
		s := pick(r, symptomsEN)
		if !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	s := strings.Join(parts, pick(r, []string{", ", "; ", " + ", ". "}))
	if r.chance(0.3) {
		s += pick(r, []string{" x3 days", " since Monday", " for 1/52", " 2/7", " on and off for a month",
			" (mother reports)", " - worse at night"})
	}
	if r.chance(0.3) {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s
}

func (r *rng) vitals(p *patient) string {
	var b strings.Builder
	b.WriteString("{")
	sep := ""
	field := func(k, v string) {
		b.WriteString(sep)
		b.WriteString(`"`)
		b.WriteString(k)
		b.WriteString(`": `)
		b.WriteString(v)
		sep = ", "
	}
	adult := p.age < 0 || p.age >= 16
	if r.chance(0.9) {
		if r.chance(0.03) {
			field("bp", "null")
		} else {
			sys := r.between(90, 190)
			dia := r.between(55, min(sys-20, 120))
			if !adult {
				sys, dia = r.between(85, 120), r.between(45, 80)
			}
			field("bp", `{"systolic": `+strconv.Itoa(sys)+`, "diastolic": `+strconv.Itoa(dia)+`}`)
		}
	}
	if r.chance(0.92) {
		field("pulse", strconv.Itoa(r.between(48, 135)))
	}
	if r.chance(0.9) {
		field("temp_c", strconv.FormatFloat(35.5+0.1*float64(r.intn(50)), 'f', 1, 64))
	}
	if r.chance(0.75) {
		field("spo2", strconv.Itoa(r.between(84, 100)))
	}
	if r.chance(0.85) {
		w := 50 + 60*r.float()
		if !adult {
			w = 3 + float64(p.age)*3.2 + 4*r.float()
		}
		field("weight_kg", strconv.FormatFloat(w, 'f', 1, 64))
	}
	if r.chance(0.2) {
		field("height_cm", strconv.Itoa(r.between(50, 195)))
	}
	if r.chance(0.8) {
		if r.chance(0.25) {
			field("notes", pick(r, quotedVitalsNotes))
		} else {
			field("notes", "null")
		}
	}
	b.WriteString("}")
	return b.String()
}

func (r *rng) treatmentNotes(p *patient) string {
	n := r.between(1, 3)
	parts := make([]string, 0, n+1)
	for len(parts) < n {
		s := pick(r, treatmentSentences)
		if !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	// Free text leaks PHI: names and phone numbers end up in notes.
	switch x := r.intn(100); {
	case x < 5 && p.phoneMobile.valid && len(p.phoneMobile.s) > 6:
		parts = append(parts, "Called "+p.plainFirst+" on "+p.phoneMobile.s+" re: results.")
	case x < 9:
		parts = append(parts, "Next of kin: "+r.otherPersonName(p)+" ("+
			pick(r, []string{"mother", "husband", "wife", "sister", "son", "guardian"})+").")
	case x < 12:
		parts = append(parts, "Pt "+p.plainFirst+" "+p.plainLast+" seen with results today.")
	}
	return strings.Join(parts, pick(r, []string{" ", "  ", "\n", " // "}))
}

func (r *rng) otherPersonName(p *patient) string {
	c := p.culture
	given := c.female
	if r.chance(0.5) {
		given = c.male
	}
	return r.pickName(c, given, r.intn(len(given))) + " " + r.pickName(c, c.surnames, r.intn(len(c.surnames)))
}

// otherContext returns a json value whose exact text (spacing, key order,
// duplicate keys, escapes, number spelling) must survive a round trip: the
// json type, unlike jsonb, stores its input verbatim.
func (r *rng) otherContext(p *patient) string {
	switch r.intn(16) {
	case 0:
		return `{"referral": "GP",  "urgent":false}`
	case 1:
		return `{"referral":"` + pick(r, []string{"Outreach clinic", "MOPC", "A&E", "Private"}) +
			`","urgent":true, "ward": null}`
	case 2:
		return `{ "ward" : "B` + strconv.Itoa(r.between(1, 9)) + `" , "bed" : ` + strconv.Itoa(r.between(1, 40)) + ` }`
	case 3:
		return `{"source":"walk-in"}`
	case 4:
		return "{\n  \"insurance\": {\"provider\": \"" + pick(r, []string{"NHIF", "AAR", "Jubilee", "Medicare", "BUPA"}) +
			"\", \"member_no\": \"" + r.digits(8) + "\"},\n  \"copay\": " + strconv.Itoa(r.intn(3)*500) + "\n}"
	case 5:
		return `{"a": 1, "a": 2}`
	case 6:
		return `{"note": "caf\u00e9 au lait spots", "escaped": "line1\nline2\ttab"}`
	case 7:
		return `{"next_of_kin": {"name": ` + jsonString(r.otherPersonName(p)) + `, "phone": ` +
			jsonString(r.phone(p.country, true)) + `}}`
	case 8:
		return `[1, 2,3]`
	case 9:
		return `"walk-in"`
	case 10:
		if r.chance(0.3) {
			return `null`
		}
		return `{}`
	case 11:
		return `{"lang":"fr","interprète": true, "langue_parlée": "français"}`
	case 12:
		return `{"big": 12345678901234567890, "float": 1.10, "exp": 1e3, "neg": -0.0}`
	case 13:
		return `  {"trailing": "whitespace"}  `
	case 14:
		return `{"programme": "PEPFAR", "facility_mfl": "` + r.digits(5) + `", "study_id": "ST-` + r.digits(4) + `"}`
	default:
		return `{"visit_type": "` + pick(r, []string{"new", "revisit", "referral", "emergency"}) +
			`", "consent": {"research": ` + strconv.FormatBool(r.chance(0.4)) + `, "sms": ` +
			strconv.FormatBool(p.consentSMS) + `}}`
	}
}
