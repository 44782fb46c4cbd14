package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	reportpkg "github.com/pgphi/pgphi/internal/report"
)

// The sign-off report of one schema migration in production: applied under
// approvals of its plan id, with a suppression and its reason, it is
// APPROVED FOR PRODUCTION; a failed one is NOT APPROVED, saying why and
// what produces the evidence. A literal of a migration file never shows.
func TestMigrationReport(t *testing.T) {
	t.Parallel()
	const canary = "CanaryLiteral4471"
	f := newFixture(t, complYAML("environment: production\naccess: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: { dba: 1, healthcare_admin: 1 }\n", ""))
	complCreatePatient(f, 20, 0)
	keys := map[string]string{}
	var list []complSigner
	for _, s := range [][2]string{{"alice", "dba"}, {"bob", "healthcare_admin"}} {
		path, pub := complKey(t, f.dir, s[0])
		keys[s[0]] = path
		list = append(list, complSigner{s[0], s[1], pub, ""})
	}
	complWriteSigners(t, filepath.Join(f.dir, "allowed_signers"), list...)
	complExpect(t, f.run("keys", "init"), 0)
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	write := func(name, sql string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
		complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	}
	approve := func() string {
		t.Helper()
		r := f.run("migrate", "--dir", dir, "status")
		m := regexp.MustCompile(`plan (migrate-[0-9a-f]{24})`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("status shows no plan id:\n%s", r)
		}
		complExpect(t, f.run("approve", m[1], "--command", "migrate", "--key", keys["alice"]), 0)
		complExpect(t, f.run("approve", m[1], "--command", "migrate", "--key", keys["bob"]), 0)
		return m[1]
	}
	write("001_add_visit_table.up.sql", "CREATE TABLE visit (id bigint PRIMARY KEY, note text);\nCREATE TABLE visit_old (id int);\nINSERT INTO visit VALUES (1, '"+canary+"');\n")
	write("002_drop_visit_old.up.sql", "-- pgphi:ignore ban-drop-table visit_old was never used\nDROP TABLE visit_old;\n")
	plan := approve()
	complExpect(t, f.run("migrate", "--dir", dir, "up", "--reason", "release 7"), 0, "applied 001_add_visit_table", "applied 002_drop_visit_old")

	var outputs []string
	report := func(want int, args ...string) result {
		t.Helper()
		r := f.run(append([]string{"report"}, args...)...)
		complExpect(t, r, want)
		outputs = append(outputs, r.stdout, r.stderr)
		return r
	}
	r := report(0, "--migration", "002_drop_visit_old")
	for _, want := range []string{"# HIPAA compliance report: migration 002_drop_visit_old", "**APPROVED FOR PRODUCTION**", plan,
		"| ban-drop-table | error | 2:1 | yes | visit_old was never used |", "alice", "bob", "reason: release 7", "| SHA-256 of the file |", "| statements | 1 of 1 |",
		"| start |", "| success |", "## Audit trail"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the report lacks %q:\n%s", want, r.stdout)
		}
	}
	// By version, as JSON: the same facts.
	r = report(0, "--migration", "1", "--format", "json")
	var js struct {
		Migration string
		Verdict   string
		Approved  bool
		History   struct {
			SHA256 string `json:"sha256"`
			Rows   int64  `json:"rows_affected"`
		}
		Run struct {
			PlanID  string `json:"plan_id"`
			Records []struct{ Seq int64 }
		}
		Approvals []struct{ Signer string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if js.Migration != "001_add_visit_table" || !js.Approved || js.Verdict != "APPROVED FOR PRODUCTION" || js.History.Rows != 1 || len(js.History.SHA256) != 64 ||
		js.Run.PlanID != plan || len(js.Run.Records) != 2 || len(js.Approvals) != 2 {
		t.Errorf("json report: %+v", js)
	}
	r = report(0, "--migration", "001_add_visit_table", "--format", "html")
	if !strings.Contains(r.stdout, `data-state="approved"`) || !strings.Contains(r.stdout, "<style>") || !strings.Contains(r.stdout, plan) {
		t.Errorf("html report:\n%s", r.stdout)
	}

	if _, err := reportpkg.FindBrowser(); err == nil {
		pdf := report(0, "--migration", "001_add_visit_table", "--format", "pdf")
		if !strings.HasPrefix(pdf.stdout, "%PDF") {
			t.Errorf("report --migration --format pdf: not a PDF: %q", pdf.stdout[:min(len(pdf.stdout), 16)])
		}
	}

	// A failed migration: NOT APPROVED, with the failure and the command.
	write("003_backfill_visit.up.sql", "INSERT INTO visit VALUES (2, '"+canary+"');\nINSERT INTO visit VALUES (1, '"+canary+"');\n")
	approve()
	complExpect(t, f.run("migrate", "--dir", dir, "up", "--reason", "release 8"), 1, "23505")
	r = report(0, "--migration", "003_backfill_visit")
	for _, want := range []string{"NOT APPROVED", "failed at statement 2 (SQLSTATE 23505)", "`pgphi migrate up --reason TEXT`", "| applied by pgphi's runner, every statement | **no** |",
		"| approvals of the plan id it ran under meet the pinned policy | yes |"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the failed migration's report lacks %q:\n%s", want, r.stdout)
		}
	}
	report(2, "--migration", "009_nothing")
	report(2, "--migration", "001_add_visit_table", "--format", "txt")

	for _, o := range outputs {
		if strings.Contains(o, canary) {
			t.Fatalf("a literal of a migration file reached the report:\n%s", o)
		}
	}
	if n := queryInt(t, f.conn(), "SELECT count(*) FROM pgphi.audit_log WHERE record::text LIKE '%"+canary+"%'"); n != 0 {
		t.Error("a literal of a migration file reached the audit trail")
	}
}

// A migration that adds a column pgphi.yaml lists tells the operator to
// encrypt it, and status and check show it unprotected until apply has.
func TestMigrationAddsAConfiguredColumn(t *testing.T) {
	t.Parallel()
	f, a, _ := tpFixture(t, "environment: test\n")
	complExpect(t, f.run("apply"), 0)
	f.writeConfig(complYAML("environment: test\n", "") + "      phone: { class: pii }\n")
	dir := filepath.Join(f.dir, "migrations")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "001_patient_phone.up.sql"), []byte("ALTER TABLE patient ADD COLUMN phone text;\n"), 0o644)
	complExpect(t, f.run("migrate", "--dir", dir, "hash"), 0)
	complExpect(t, tpAs(f, a, a.DBA, "migrate", "--dir", dir, "up", "--reason", "phone"), 0, "applied 001_patient_phone",
		"public.patient.phone are listed in", "hold plaintext until encrypted: run `pgphi apply`")
	// The application writes to it before apply: plaintext only.
	f.exec("UPDATE patient SET phone = '555-0100' WHERE id < 5")
	unprotected := "UNPROTECTED public.patient.phone: no encrypted column yet; its 4 values and every write to it stay plaintext until `pgphi apply` runs"
	r := f.run("status")
	if !strings.Contains(r.stdout, unprotected) || strings.Contains(r.stdout, "UNPROTECTED public.patient.last_name") {
		t.Errorf("status before apply:\n%s", r)
	}
	// The columns apply protected still count as encrypted.
	if !regexp.MustCompile(`public\.patient\s+last_name\s+40\s+40\s+0`).MatchString(r.stdout) {
		t.Errorf("status lost the protected columns' counts:\n%s", r)
	}
	r = f.run("status", "--json")
	var st struct {
		Columns []struct {
			Column    string
			Protected bool
		}
	}
	json.Unmarshal([]byte(r.stdout), &st)
	for _, c := range st.Columns {
		if c.Protected != (c.Column != "phone") {
			t.Errorf("status --json: %s protected=%v", c.Column, c.Protected)
		}
	}
	r = f.run("check")
	if !regexp.MustCompile("WARN every configured column protected +UNPROTECTED, plaintext only until `pgphi apply` runs: public.patient.phone \\(4 values\\)").MatchString(r.stdout) {
		t.Errorf("check before apply:\n%s", r)
	}
	complExpect(t, f.run("apply"), 0)
	r = f.run("status")
	complExpect(t, r, 0)
	if strings.Contains(r.stdout, "UNPROTECTED") {
		t.Errorf("status after apply:\n%s", r)
	}
	complExpect(t, f.run("check"), 0, "PASS every configured column protected")
}
