package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/pgtest"
)

// The Felicity-style Python service (examples/felicity-python) taken
// through the whole migration on a real server, with `pgphi serve` running:
// it writes plaintext while apply runs, searches through serve once
// use_encrypted_search is on, writes ciphertext and terms under
// require_encryption, lives without plaintext after cleanup, and reads
// plaintext again after a rollback. It decides from pgphi's flags and the
// table's columns; the test only switches pgphi's flags.

const storyConfig = `version: 1
environment: test
apply: { batch_size: 50, adaptive: false }
tables:
  patient:
    primary_key: uid
    columns:
      first_name:    { class: pii, search: [exact, prefix, phonetic] }
      middle_name:   { class: pii, search: [exact] }
      last_name:     { class: pii, search: [exact, prefix, contains, phonetic] }
      phone_mobile:  { class: pii, search: [phone] }
      phone_home:    { class: pii, search: [phone] }
      email:         { class: pii, search: [exact] }
      date_of_birth: { class: pii, search: [date] }
`

// storyProtected are the protected columns, in the order the test reads them.
var storyProtected = []string{"first_name", "middle_name", "last_name", "phone_mobile", "phone_home", "email", "date_of_birth"}

// storyKinds are the search kinds of each searched column, for the
// predicate the test evaluates itself.
var storyKinds = map[string][]blindindex.Kind{
	"first_name":    {blindindex.Exact, blindindex.Prefix, blindindex.Phonetic},
	"last_name":     {blindindex.Exact, blindindex.Prefix, blindindex.Contains, blindindex.Phonetic},
	"phone_mobile":  {blindindex.Phone},
	"phone_home":    {blindindex.Phone},
	"date_of_birth": {blindindex.Date},
}

// syncBuffer is an output buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// felicityApp is the Python service, one request per line.
type felicityApp struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *syncBuffer
	mu     sync.Mutex
}

func startFelicity(t *testing.T, dbURL, serveURL, tokenFile string) *felicityApp {
	t.Helper()
	app := filepath.Join(moduleRoot(), "examples", "felicity-python", "app.py")
	cmd := exec.Command(python(t), app)
	cmd.Env = append(pythonEnv(), "FELICITY_DATABASE_URL="+dbURL, "PGPHI_SERVE_URL="+serveURL, "PGPHI_SERVE_TOKEN_FILE="+tokenFile)
	cmd.Dir = t.TempDir()
	a := &felicityApp{t: t, cmd: cmd, stderr: &syncBuffer{}}
	cmd.Stderr = a.stderr
	var err error
	if a.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.out = bufio.NewScanner(stdout)
	a.out.Buffer(make([]byte, 1<<20), 16<<20)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the Felicity service: %v", err)
	}
	t.Cleanup(func() {
		a.in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return a
}

// felicityInit creates the service's table as its migrations would.
func felicityInit(t *testing.T, dbURL string) {
	t.Helper()
	cmd := exec.Command(python(t), filepath.Join(moduleRoot(), "examples", "felicity-python", "app.py"), "init")
	cmd.Env = append(pythonEnv(), "FELICITY_DATABASE_URL="+dbURL)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("app.py init: %v\n%s", err, out)
	}
}

// call sends one request and returns the response; it fails the test on a
// broken process.
func (a *felicityApp) call(req map[string]any) map[string]any {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	line, _ := json.Marshal(req)
	if _, err := a.in.Write(append(line, '\n')); err != nil {
		a.t.Fatalf("Felicity service: writing %s: %v\nstderr:\n%s", req["op"], err, a.stderr.String())
	}
	if !a.out.Scan() {
		a.t.Fatalf("Felicity service: no answer to %s (%v)\nstderr:\n%s", req["op"], a.out.Err(), a.stderr.String())
	}
	var resp map[string]any
	if err := json.Unmarshal(a.out.Bytes(), &resp); err != nil {
		a.t.Fatalf("Felicity service: answer to %s is not JSON: %v", req["op"], err)
	}
	return resp
}

// must sends a request that has to succeed.
func (a *felicityApp) must(req map[string]any) map[string]any {
	a.t.Helper()
	resp := a.call(req)
	if resp["ok"] != true {
		a.t.Fatalf("Felicity service: %s refused: %v\nstderr:\n%s", req["op"], resp["error"], a.stderr.String())
	}
	return resp
}

// storyPatients is what the application was told: uid -> field -> value
// (nil: NULL). It is the plaintext the searches must be judged on once the
// database no longer holds it.
type storyPatients map[string]map[string]any

var (
	storyFirst = []string{"John", "Jon", "Jonathan", "Jane", "Jean", "June", "Katherine", "Catherine", "Kathryn", "Stephen", "Steven",
		"Mohammed", "Muhammad", "Zoë", "José", "Amara", "Wanjiru", "Aoife", "Siobhan", "Li"}
	storyLast = []string{"Smith", "Smyth", "Schmidt", "Okafor", "Okafur", "Nguyen", "Garcia", "García", "O'Brien", "Obrien", "Müller",
		"Mueller", "Kowalski", "Kamau", "Odhiambo", "Thompson", "Thomson", "Van der Berg"}
	storyAreas = []string{"415", "212", "617", "312", "206"}
)

// newPatient makes patient n: names with phonetic relatives, US phones in
// several formats (some not valid numbers), dates of birth across ages,
// NULLs, and a planted canary in the middle name and e-mail.
func newPatient(r *rand.Rand, n int, canary string) map[string]any {
	p := map[string]any{
		"client_patient_id": fmt.Sprintf("CP-%05d", n),
		"patient_id":        fmt.Sprintf("P%05d", n),
		"first_name":        storyFirst[r.IntN(len(storyFirst))],
		"last_name":         storyLast[r.IntN(len(storyLast))],
		"gender":            []string{"female", "male", "unknown"}[r.IntN(3)],
		"middle_name":       nil,
		"phone_mobile":      nil,
		"phone_home":        nil,
		"email":             fmt.Sprintf("%s-%d@example.org", canary, n),
		"date_of_birth":     nil,
		"consent_sms":       r.IntN(2) == 0,
	}
	if n%3 == 0 {
		p["middle_name"] = canary + "-mid"
	}
	area, line := storyAreas[r.IntN(len(storyAreas))], 100+r.IntN(9800)
	switch n % 5 {
	case 0:
		p["phone_mobile"] = fmt.Sprintf("(%s) 555-%04d", area, line)
	case 1:
		p["phone_mobile"] = fmt.Sprintf("+1 %s 555 %04d", area, line)
	case 2:
		p["phone_mobile"] = fmt.Sprintf("%s.555.%04d", area, line)
	case 3:
		p["phone_mobile"] = fmt.Sprintf("555-%04d", line) // no area code: not a valid number
	}
	if n%4 == 0 {
		p["phone_home"] = fmt.Sprintf("+1-%s-555-%04d", storyAreas[r.IntN(len(storyAreas))], 100+r.IntN(9800))
	}
	if n%7 != 0 {
		dob := time.Now().UTC().AddDate(-r.IntN(95), 0, -r.IntN(365))
		p["date_of_birth"] = dob.Format("2006-01-02")
	}
	return p
}

// storyQueries are the searches the application runs in each phase.
type storyQuery struct {
	by             string
	value          string
	minAge, maxAge int
}

var storyQueries = []storyQuery{
	{by: "name", value: "Jon"}, {by: "name", value: "smyth"}, {by: "name", value: "Catherine"}, {by: "name", value: "Okafor"},
	{by: "name", value: "Steven"}, {by: "name", value: "Mueller"}, {by: "name", value: "obrien"},
	{by: "phone_last4", value: "phone_mobile"}, // filled from the data: the last 4 of a mobile number
	{by: "phone_last4", value: "phone_home"},   // and of a home number
	{by: "phone_last4", value: "0000"},
	{by: "age", minAge: 30, maxAge: 40}, {by: "age", minAge: 0, maxAge: 17}, {by: "age", minAge: 65, maxAge: 200},
}

// expected evaluates docs/SEARCH.md's match predicate of q on the plaintext
// of every patient (not SQL equality: names match normalized and by sound,
// phones as numbers, ages on today's date).
func (ps storyPatients) expected(t *testing.T, q storyQuery) []string {
	t.Helper()
	var cols []string
	var bq blindindex.Query
	switch q.by {
	case "name":
		cols, bq = []string{"first_name", "last_name"}, blindindex.Query{Kind: blindindex.QPhonetic, Value: q.value}
	case "phone_last4":
		cols, bq = []string{"phone_mobile", "phone_home"}, blindindex.Query{Kind: blindindex.QLast4, Value: q.value}
	case "age":
		cols, bq = []string{"date_of_birth"}, blindindex.Query{Kind: blindindex.QAgeBetween, MinAge: q.minAge, MaxAge: q.maxAge}
	}
	var out []string
	for uid, p := range ps {
		for _, col := range cols {
			v, _ := p[col].(string)
			if p[col] == nil {
				continue
			}
			if storyMatch(t, col, bq, v) {
				out = append(out, uid)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// storyMatch is Plan.Match of a column with the recorded options (the
// defaults: US numbers); the keys are irrelevant to Match.
func storyMatch(t *testing.T, col string, q blindindex.Query, plaintext string) bool {
	t.Helper()
	kinds := storyKinds[col]
	o := blindindex.Defaults()
	keys, bits := map[blindindex.SubKind][]byte{}, map[blindindex.SubKind]int{}
	for i, s := range blindindex.SubKinds(kinds, o) {
		k := make([]byte, blindindex.KeySize)
		k[0] = byte(i + 1)
		keys[s], bits[s] = k, 16
	}
	c, err := blindindex.NewColumn(kinds, o, keys, bits)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Query(q)
	if err != nil {
		t.Fatalf("query %s on %s: %v", q.Kind, col, err)
	}
	return plan.Match(plaintext)
}

// uidsOf lists the uids of the patients an answer returned, sorted.
func uidsOf(resp map[string]any) []string {
	var out []string
	for _, p := range resp["patients"].([]any) {
		out = append(out, p.(map[string]any)["uid"].(string))
	}
	slices.Sort(out)
	return out
}

// checkPatient compares what the application read with what it was told.
func (ps storyPatients) checkPatient(t *testing.T, phase string, got map[string]any) {
	t.Helper()
	uid, _ := got["uid"].(string)
	want, ok := ps[uid]
	if !ok {
		t.Errorf("%s: the application returned a patient %q it never created", phase, uid)
		return
	}
	for f, w := range want {
		if f == "uid" {
			continue
		}
		if g := got[f]; fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: patient %s: %s differs from what the application wrote (NULL: got %v, want %v)", phase, uid, f, g == nil, w == nil)
		}
	}
}

// runSearches runs every query through the application and compares the
// rows it returns with the predicate over the plaintext.
func (ps storyPatients) runSearches(t *testing.T, app *felicityApp, phase string) {
	t.Helper()
	for _, q := range storyQueries {
		if col := q.value; q.by == "phone_last4" && strings.HasPrefix(col, "phone_") {
			for _, uid := range slices.Sorted(maps.Keys(ps)) {
				if s, ok := ps[uid][col].(string); ok && len(s) >= 4 {
					q.value = s[len(s)-4:]
					break
				}
			}
		}
		resp := app.must(map[string]any{"op": "search", "by": q.by, "value": q.value, "min_age": q.minAge, "max_age": q.maxAge})
		got, want := uidsOf(resp), ps.expected(t, q)
		if !slices.Equal(got, want) {
			t.Errorf("%s: search by %s (%d..%d): the application found %d patients, the predicate over the plaintext %d\nonly found: %v\nonly expected: %v",
				phase, q.by, q.minAge, q.maxAge, len(got), len(want), minus(got, want), minus(want, got))
		}
		for _, p := range resp["patients"].([]any) {
			ps.checkPatient(t, phase+": search by "+q.by, p.(map[string]any))
		}
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// createPatients has the application create n patients and records them.
func (ps storyPatients) createPatients(t *testing.T, app *felicityApp, r *rand.Rand, from, n int, canary string) []string {
	t.Helper()
	var batch []map[string]any
	for i := range n {
		batch = append(batch, newPatient(r, from+i, canary))
	}
	resp := app.must(map[string]any{"op": "create", "patients": batch})
	var uids []string
	for i, u := range resp["uids"].([]any) {
		uid := u.(string)
		batch[i]["uid"] = uid
		ps[uid] = batch[i]
		uids = append(uids, uid)
	}
	return uids
}

// updatePatient has the application change a patient's name, phone and
// date of birth, and records it.
func (ps storyPatients) updatePatient(t *testing.T, app *felicityApp, r *rand.Rand, uid string, n int) {
	t.Helper()
	fields := map[string]any{
		"last_name":     storyLast[r.IntN(len(storyLast))],
		"phone_mobile":  fmt.Sprintf("+1 %s 555 %04d", storyAreas[r.IntN(len(storyAreas))], 100+r.IntN(9800)),
		"date_of_birth": time.Now().UTC().AddDate(-r.IntN(90), 0, -r.IntN(365)).Format("2006-01-02"),
		"phone_home":    nil,
	}
	if n%2 == 0 {
		fields["first_name"] = storyFirst[r.IntN(len(storyFirst))]
	}
	app.must(map[string]any{"op": "update", "uid": uid, "fields": fields})
	maps.Copy(ps[uid], fields)
}

// textSearch runs Felicity's free-text search; on ciphertext it is not
// ILIKE (README.md), so only what it returns is checked: real patients,
// read correctly, and the ones whose last name is the query among them.
func (ps storyPatients) textSearch(t *testing.T, app *felicityApp, phase string) {
	t.Helper()
	resp := app.must(map[string]any{"op": "search", "by": "text", "value": "Thomson"})
	got := uidsOf(resp)
	for _, p := range resp["patients"].([]any) {
		ps.checkPatient(t, phase+": text search", p.(map[string]any))
	}
	for uid, p := range ps {
		if p["last_name"] == "Thomson" && !slices.Contains(got, uid) {
			t.Errorf("%s: text search for a last name misses patient %s", phase, uid)
		}
	}
}

// checkOffline decrypts the whole table with examples/decrypt-python (the
// passphrase through a descriptor) and compares every value with what the
// application wrote.
func (ps storyPatients) checkOffline(t *testing.T, f *fixture) {
	t.Helper()
	out, errOut, code := pyDecrypt(t, nil, []*os.File{secretPipe(t, testPassphrase)}, "--database-url", f.url, "--passphrase-fd", "3", "--table", "patient")
	if code != 0 {
		t.Fatalf("offline decryptor: exit %d\n%s", code, errOut)
	}
	noCanary(t, "the offline decryptor's messages", errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(ps) {
		t.Errorf("offline decryptor: %d rows, the application wrote %d patients", len(lines), len(ps))
	}
	for _, l := range lines {
		var row struct {
			Key    map[string]string
			Values map[string]*struct{ Type, Text string }
		}
		if err := json.Unmarshal([]byte(l), &row); err != nil {
			t.Fatalf("offline decryptor output is not JSON: %v", err)
		}
		want := ps[row.Key["uid"]]
		for _, col := range storyProtected {
			v := row.Values[col]
			if (v == nil) != (want[col] == nil) || (v != nil && v.Text != want[col]) {
				t.Errorf("offline decryptor: patient %s: %s differs from what the application wrote", row.Key["uid"], col)
			}
		}
	}
}

// checkAll reads every patient through the application and compares.
func (ps storyPatients) checkAll(t *testing.T, app *felicityApp, phase string) {
	t.Helper()
	uids := slices.Sorted(maps.Keys(ps))
	resp := app.must(map[string]any{"op": "list", "uids": uids})
	if got := uidsOf(resp); !slices.Equal(got, uids) {
		t.Errorf("%s: the application lists %d patients, want %d", phase, len(got), len(uids))
	}
	for _, p := range resp["patients"].([]any) {
		ps.checkPatient(t, phase, p.(map[string]any))
	}
	// One patient at a time, as a detail page reads it.
	for _, uid := range uids[:5] {
		ps.checkPatient(t, phase, app.must(map[string]any{"op": "get", "uid": uid})["patient"].(map[string]any))
	}
}

// dbPlaintext reads the plaintext columns by key: uid -> column -> text or nil.
func dbPlaintext(t *testing.T, f *fixture) map[string]map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := f.conn()
	rows, err := c.Query(ctx, `SELECT uid, first_name, middle_name, last_name, phone_mobile, phone_home, email, to_char(date_of_birth, 'YYYY-MM-DD') FROM patient`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]any{}
	for rows.Next() {
		var uid string
		v := make([]*string, len(storyProtected))
		dst := []any{&uid}
		for i := range v {
			dst = append(dst, &v[i])
		}
		if err := rows.Scan(dst...); err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		for i, col := range storyProtected {
			if v[i] != nil {
				m[col] = *v[i]
			} else {
				m[col] = nil
			}
		}
		out[uid] = m
	}
	return out
}

// noCanary fails t when a planted value appears in output.
func noCanary(t *testing.T, what, output string) {
	t.Helper()
	if strings.Contains(output, canaryPrefix) {
		t.Errorf("a planted value leaked into %s:\n%s", what, output)
	}
}

// TestFelicityPythonStory is the whole migration as a Python application
// lives it.
func TestFelicityPythonStory(t *testing.T) {
	t.Parallel()
	python(t)
	canary := newCanary(t)
	r := rand.New(rand.NewPCG(11, 17))
	f := newFixture(t, storyConfig)
	var outputs []result
	run := func(args ...string) result {
		t.Helper()
		res := f.mustRun(args...)
		outputs = append(outputs, res)
		return res
	}
	verify := func() {
		t.Helper()
		outputs = append(outputs, f.verifyOK(countRows(t, f)))
	}

	// The application owns its table; pgphi's groups and keys are set up by
	// the operator (here the superuser); serve logs in as a NOINHERIT
	// member of the healthcare_admin group and of the role the
	// application's token acts as.
	a := pgtest.NewActors(t, f.url)
	felicityInit(t, a.URL(a.AppOwner))
	run("roles", "init")
	run("keys", "init")
	login := "serve_" + strings.TrimPrefix(a.DBA, "dba_")
	f.exec(`CREATE ROLE ` + login + ` LOGIN NOINHERIT`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, f.url); err == nil {
			// DROP OWNED also revokes the role's privileges in this database.
			_, _ = c.Exec(ctx, "DROP OWNED BY "+login)
			_, _ = c.Exec(ctx, "DROP ROLE IF EXISTS "+login)
			c.Close(ctx)
		}
	})
	f.exec(`GRANT CONNECT ON DATABASE ` + dbNameOf(f.url) + ` TO ` + login)
	f.exec(`GRANT ` + pgtest.GroupHealthcareAdmin + `, ` + a.HealthcareAdmin + ` TO ` + login)
	srv := startStoryServe(t, f, a.URL(login), a.HealthcareAdmin)
	app := startFelicity(t, a.URL(a.AppOwner), srv.url, srv.tokenFile)
	// serve searches the table as the application's client role.
	if _, err := pgtest.Connect(t, a.URL(a.AppOwner)).Exec(context.Background(), `GRANT SELECT ON patient TO `+a.HealthcareAdmin); err != nil {
		t.Fatal(err)
	}
	ps := storyPatients{}
	first := ps.createPatients(t, app, r, 0, 200, canary)
	n := 200

	// 1. The application writes plaintext while apply runs.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, aout, aerr := f.start(ctx, "apply")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	writes := 0
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("apply while the application writes: %v\nstdout:\n%s\nstderr:\n%s", err, aout, aerr)
			}
			running = false
		default:
			ps.createPatients(t, app, r, n, 3, canary)
			ps.updatePatient(t, app, r, first[writes%len(first)], n)
			n += 3
			writes++
		}
	}
	outputs = append(outputs, result{args: []string{"apply"}, stdout: aout.String(), stderr: aerr.String()})
	if writes == 0 {
		t.Fatal("apply finished before the application wrote anything")
	}
	t.Logf("phase 1: %d writes while apply ran", writes)
	if ph := app.must(map[string]any{"op": "phase"})["phase"].(map[string]any); ph["use_encrypted_search"] != false || len(ph["plaintext"].([]any)) != 7 {
		t.Fatalf("phase 1: the application sees %v", ph)
	}
	ps.checkAll(t, app, "phase 1 (plaintext)")
	ps.textSearch(t, app, "phase 1 (plaintext)")
	run("apply") // rows written after apply's last catch-up
	verify()

	// 2. use_encrypted_search: searches go through serve and return what
	// the predicate over the plaintext (read by key) returns.
	run("flags", "set", "use_encrypted_search", "on")
	for uid, plain := range dbPlaintext(t, f) {
		for _, col := range storyProtected {
			if fmt.Sprint(plain[col]) != fmt.Sprint(ps[uid][col]) {
				t.Fatalf("phase 2: patient %s: the database's plaintext %s differs from what the application wrote", uid, col)
			}
		}
	}
	ps.runSearches(t, app, "phase 2 (use_encrypted_search)")
	ps.textSearch(t, app, "phase 2 (use_encrypted_search)")
	ps.updatePatient(t, app, r, first[0], n) // a plaintext write: read back before pgphi catches up
	ps.checkAll(t, app, "phase 2 (use_encrypted_search)")
	run("apply")
	verify()

	// 3. require_encryption: the application writes ciphertext and terms,
	// and NULL plaintext.
	run("flags", "set", "require_encryption", "on")
	created := ps.createPatients(t, app, r, n, 20, canary)
	n += 20
	updated := first[10:20]
	for i, uid := range updated {
		ps.updatePatient(t, app, r, uid, n+i)
	}
	// Every value written under require_encryption has NULL plaintext, a
	// ciphertext and terms (every protected column is searchable); values of updated rows that the update left
	// alone keep their plaintext until cleanup.
	c := f.conn()
	for _, col := range storyProtected {
		check := created
		if slices.Contains([]string{"last_name", "phone_mobile", "phone_home", "date_of_birth"}, col) {
			check = append(slices.Clone(created), updated...)
		}
		var want []string
		for _, uid := range check {
			if ps[uid][col] != nil {
				want = append(want, uid)
			}
		}
		if k := queryInt(t, c, `SELECT count(*) FROM patient WHERE uid = ANY($1) AND `+col+` IS NOT NULL`, check); k != 0 {
			t.Errorf("phase 3: %d rows the application wrote under require_encryption have a plaintext %s", k, col)
		}
		if k := queryInt(t, c, `SELECT count(*) FROM patient WHERE uid = ANY($1) AND `+col+`_encrypted IS NOT NULL AND `+col+`_bidx IS NOT NULL`, want); k != int64(len(want)) {
			t.Errorf("phase 3: %d of the %d %s values the application wrote under require_encryption have a ciphertext and terms", k, len(want), col)
		}
	}
	ps.checkAll(t, app, "phase 3 (require_encryption)")
	// A value the column cannot take is refused by serve, without the value.
	bad := newPatient(r, 9999, canary)
	bad["date_of_birth"] = canary
	if resp := app.call(map[string]any{"op": "create", "patients": []any{bad}}); resp["ok"] != false || !strings.Contains(fmt.Sprint(resp["error"]), "date_of_birth") {
		t.Errorf("phase 3: a date of birth that is not a date: %v", resp)
	} else {
		noCanary(t, "the refusal of a bad value", fmt.Sprint(resp["error"]))
	}
	ps.runSearches(t, app, "phase 3 (require_encryption)")
	verify()

	// 4. cleanup: no plaintext column; the application creates, updates,
	// reads and searches.
	run("cleanup", "--confirm", lcPlanID(f), "--purge", "vacuum-full")
	if k := queryInt(t, c, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'patient' AND column_name = ANY($1)`, storyProtected); k != 0 {
		t.Fatalf("phase 4: %d plaintext columns left after cleanup", k)
	}
	ps.createPatients(t, app, r, n, 10, canary)
	n += 10
	for i, uid := range first[20:30] {
		ps.updatePatient(t, app, r, uid, n+i)
	}
	ps.checkAll(t, app, "phase 4 (after cleanup)")
	ps.runSearches(t, app, "phase 4 (after cleanup)")
	ps.textSearch(t, app, "phase 4 (after cleanup)")
	verify()
	// Disaster recovery: the offline decryptor reads the same table without
	// pgphi, ciphertexts written by pgphi and by the application alike.
	ps.checkOffline(t, f)

	// 5. rollback after cleanup: the plaintext is back and the application
	// reads and writes it.
	run("rollback")
	if ph := app.must(map[string]any{"op": "phase"})["phase"].(map[string]any); len(ph["encrypted"].([]any)) != 0 || ph["use_encrypted_search"] != false {
		t.Fatalf("phase 5: after rollback the application sees %v", ph)
	}
	ps.checkAll(t, app, "phase 5 (after rollback)")
	back := ps.createPatients(t, app, r, n, 5, canary)
	if k := queryInt(t, c, `SELECT count(*) FROM patient WHERE uid = ANY($1) AND first_name IS NOT NULL AND last_name IS NOT NULL AND email IS NOT NULL`, back); k != 5 {
		t.Errorf("phase 5: %d of 5 patients created after rollback have their plaintext", k)
	}
	for uid, plain := range dbPlaintext(t, f) {
		for _, col := range storyProtected {
			if fmt.Sprint(plain[col]) != fmt.Sprint(ps[uid][col]) {
				t.Errorf("phase 5: patient %s: the plaintext %s restored by rollback differs from what the application wrote", uid, col)
			}
		}
	}
	for _, q := range storyQueries {
		if q.by == "age" { // plaintext SQL answers ages exactly as the predicate
			got := uidsOf(app.must(map[string]any{"op": "search", "by": q.by, "min_age": q.minAge, "max_age": q.maxAge}))
			if want := ps.expected(t, q); !slices.Equal(got, want) {
				t.Errorf("phase 5: search by age %d..%d on plaintext: %d patients, want %d", q.minAge, q.maxAge, len(got), len(want))
			}
		}
	}
	// Nothing is protected any more: verify has no ciphertext to check,
	// says the plan was rolled back and passes; the plaintext was compared
	// above with what the application wrote.
	vr := f.run("verify")
	outputs = append(outputs, vr)
	if vr.code != 0 || !strings.Contains(vr.stdout, "was rolled back at") {
		t.Errorf("verify after rollback: %s", vr)
	}

	// Nothing pgphi, serve or the application printed or logged holds a
	// planted value (the application's answers on stdout are its data).
	for _, o := range outputs {
		noCanary(t, "the output of pgphi "+shortArgs(o.args), o.stdout+o.stderr)
	}
	srv.stop(t)
	noCanary(t, "pgphi serve's output", srv.output.String())
	noCanary(t, "the Felicity service's log", app.stderr.String())
	if !strings.Contains(srv.output.String(), "client=felicity") || !strings.Contains(app.stderr.String(), "through pgphi serve") {
		t.Errorf("serve's and the application's logs do not show the searches; the canary check above saw nothing:\nserve:\n%s", srv.output.String())
	}
	// Every decrypt and search of the application is audited with its
	// reason, as its client's role (serve acts as it).
	if k := queryInt(t, c, `SELECT count(*) FROM pgphi.audit_log WHERE record->>'reason' LIKE 'felicity:%' AND record->>'command' IN ('api.decrypt', 'api.search')`); k < 10 {
		t.Errorf("%d audit records of the application's decrypts and searches", k)
	}
	if k := queryInt(t, c, `SELECT count(*) FROM pgphi.audit_log WHERE record->>'reason' LIKE 'felicity:%' AND record->'actor'->>'db_role' IS DISTINCT FROM $1`, a.HealthcareAdmin); k != 0 {
		logQuery(t, c, `SELECT record->>'command', record->'actor'->>'db_role' FROM pgphi.audit_log WHERE record->>'reason' LIKE 'felicity:%' LIMIT 3`)
		t.Errorf("%d audit records of the application do not name its client role %s", k, a.HealthcareAdmin)
	}
	// Nor pgphi's state: audit records, plans, clients.
	tables := strings.Fields(lcQueryLines(t, c, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgphi' AND c.relkind = 'r'`))
	if !slices.Contains(tables, "audit_log") {
		t.Errorf("pgphi's tables %v do not include audit_log", tables)
	}
	for _, tbl := range tables {
		q := `SELECT count(*) FROM (SELECT row_to_json(x)::text AS j FROM pgphi."` + tbl + `" x) s WHERE j LIKE '%' || $1 || '%'`
		if k := queryInt(t, c, q, canaryPrefix); k != 0 {
			t.Errorf("pgphi.%s holds %d rows with a planted value", tbl, k)
		}
	}
}

func countRows(t *testing.T, f *fixture) int64 {
	t.Helper()
	return queryInt(t, f.conn(), `SELECT count(*) FROM patient`)
}

// storyServe is a running `pgphi serve` and the token of the application.
type storyServe struct {
	url, tokenFile string
	cmd            *exec.Cmd
	output         *syncBuffer
	stopped        bool
}

var serveListening = regexp.MustCompile(`serve: listening on (http://127\.0\.0\.1:\d+)`)

// startStoryServe starts pgphi serve on a loopback port, logged in as
// login (a NOINHERIT member of the roles it acts as), and registers the
// application as a client acting as clientRole; the token goes to a 0600
// file, never into argv or the environment.
func startStoryServe(t *testing.T, f *fixture, login, clientRole string) *storyServe {
	t.Helper()
	tok := f.mustRun("serve", "token", "create", "felicity", "--role", clientRole)
	token := strings.TrimSpace(tok.stdout)
	if !strings.HasPrefix(token, "pgphi_") {
		t.Fatalf("serve token create printed no token:\n%s", tok)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &storyServe{tokenFile: tokenFile, output: &syncBuffer{}}
	s.cmd = exec.Command(pgphiBin, "--config", f.config, "--database-url", login, "serve", "--listen", "127.0.0.1:0")
	s.cmd.Env = append(cleanEnv(), f.env...)
	s.cmd.Dir = t.TempDir()
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for s.url == "" {
		if m := serveListening.FindStringSubmatch(s.output.String()); m != nil {
			s.url = m[1]
			break
		}
		if time.Now().After(deadline) || s.cmd.ProcessState != nil {
			t.Fatalf("pgphi serve did not say where it listens within 30s:\n%s", s.output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get(s.url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pgphi serve /healthz: %v %v\n%s", err, resp, s.output.String())
	}
	resp.Body.Close()
	return s
}

// stop ends serve gracefully (SIGTERM) and waits for it.
func (s *storyServe) stop(t *testing.T) {
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pgphi serve exited with %v after SIGTERM:\n%s", err, s.output.String())
		}
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		t.Errorf("pgphi serve did not stop within 20s of SIGTERM")
	}
}

func dbNameOf(url string) string {
	name := url[strings.LastIndex(url, "/")+1:]
	if i := strings.IndexByte(name, '?'); i >= 0 {
		name = name[:i]
	}
	return name
}
