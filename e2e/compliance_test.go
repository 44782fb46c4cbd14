package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/policy"
)

// The compliance wrapper every database command runs in (cli/guard.go), seen
// through the binary: refusals by policy (role, approvals, hooks, validation,
// TLS) with exit code 4 and an audit record saying so; the tamper-evident
// audit trail (table, mirror file, checkpoints, export, archive); the
// pre-flight checklist and the compliance report.

// complCanary is a value planted in the data: it must never reach an audit
// record, a hook or pgphi's output.
const complCanary = "Qzxcanaryvalue"

// complViolation is an SSN that breaks the validation pattern; it must never
// be printed or audited either.
const complViolation = "CANARY-SSN-0042"

// complYAML is a config of the compliance tests' patient table: header holds
// top-level keys besides version and tables, ssnOpts extra options of the
// ssn column (e.g. ", validate: {...}").
func complYAML(header, ssnOpts string) string {
	return "version: 1\n" + header + `
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact] }
      ssn: { class: pii` + ssnOpts + ` }
`
}

// complCreatePatient creates patient with rows rows; row 7 holds the canary
// last name, and violations rows (ids 1..violations) hold an invalid SSN.
func complCreatePatient(f *fixture, rows, violations int) {
	f.t.Helper()
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, last_name text, ssn text)`)
	f.exec(`INSERT INTO patient
		SELECT g,
		       CASE WHEN g = 7 THEN $2 ELSE 'Last' || g END,
		       CASE WHEN g <= $3 THEN $4 ELSE lpad((g % 1000)::text, 3, '0') || '-12-3456' END
		FROM generate_series(1, $1::int) g`, rows, complCanary, violations, complViolation)
}

// complRun runs pgphi with the fixture's config and passphrase against
// another database URL (another role, or another server).
func complRun(f *fixture, dbURL string, args ...string) result {
	f.t.Helper()
	all := append([]string{"--config", f.config, "--database-url", dbURL}, args...)
	out, errOut, code := runPgphi(f.t, f.env, all...)
	return result{args: all, stdout: out, stderr: errOut, code: code}
}

// complURLAs is the fixture's database URL with another user (trust auth).
func complURLAs(t testing.TB, dbURL, user string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// complExpect requires exit code want and every fragment in stdout+stderr.
func complExpect(t testing.TB, r result, want int, fragments ...string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("want exit %d, got %s", want, r)
	}
	for _, s := range fragments {
		if !strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("output does not say %q:\n%s", s, r)
		}
	}
}

// complLastRecord returns the newest audit record of the fixture's database.
func complLastRecord(t testing.TB, f *fixture) audit.Record {
	t.Helper()
	var text string
	if err := f.conn().QueryRow(context.Background(), `SELECT record::text FROM pgphi.audit_log ORDER BY seq DESC LIMIT 1`).Scan(&text); err != nil {
		t.Fatalf("reading the last audit record: %v", err)
	}
	rec, err := audit.ParseRecord([]byte(text))
	if err != nil {
		t.Fatalf("last audit record: %v", err)
	}
	return rec
}

// complAssertRefused checks that the newest audit record is the refusal of
// command, with a policy error class containing class.
func complAssertRefused(t testing.TB, f *fixture, command, class string) audit.Record {
	t.Helper()
	rec := complLastRecord(t, f)
	if rec.Event != audit.EventRefused || rec.Command != command || !strings.HasPrefix(rec.ErrorClass, "policy") || !strings.Contains(rec.ErrorClass, class) {
		t.Errorf("last audit record: event %q, command %q, error_class %q; want event refused, command %s, error_class policy...%s",
			rec.Event, rec.Command, rec.ErrorClass, command, class)
	}
	return rec
}

// complPlanID returns the plan id of the fixture's current config.
func complPlanID(f *fixture) string {
	f.t.Helper()
	r := f.mustRun("plan", "--json")
	var p struct {
		PlanID string `json:"plan_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.PlanID == "" {
		f.t.Fatalf("plan --json: no plan_id (%v):\n%s", err, r.stdout)
	}
	return p.PlanID
}

// complKey writes a new Ed25519 private key (PKCS#8 PEM, 0600) to dir/name.pem.
func complKey(t testing.TB, dir, name string) (string, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data, err := policy.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// complSigner is one line of an allowed signers file.
type complSigner struct {
	name, role string
	pub        ed25519.PublicKey
	dbRole     string // database role the approver logs in as (default: name)
}

func complWriteSigners(t testing.TB, path string, signers ...complSigner) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# NAME ROLE KEY\n")
	for _, s := range signers {
		db := s.dbRole
		if db == "" {
			db = s.name
		}
		b.WriteString(s.name + " " + s.role + " " + db + " " + policy.AuthorizedKey(s.pub) + " " + s.name + "@test\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// complEncryptedColumns counts the ciphertext columns apply added to patient.
func complEncryptedColumns(t testing.TB, f *fixture) int64 {
	t.Helper()
	return queryInt(t, f.conn(), `SELECT count(*) FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name = 'patient' AND column_name LIKE '%\_encrypted'`)
}

// complRandHex returns n random bytes in hex.
func complRandHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// complAuditText is every audit record of the table, and the mirror file.
func complAuditText(t testing.TB, f *fixture) (table, file string) {
	t.Helper()
	table = complQueryLines(t, f.conn(), `SELECT record::text FROM pgphi.audit_log ORDER BY seq`)
	data, err := os.ReadFile(complMirror(f))
	if err != nil {
		t.Fatalf("reading the audit mirror: %v", err)
	}
	return table, string(data)
}

// complMirror is the default audit.file: pgphi-audit.jsonl next to the config.
func complMirror(f *fixture) string { return filepath.Join(f.dir, "pgphi-audit.jsonl") }

// complAssertNoLeak fails t if value appears in the outputs or the audit trail.
func complAssertNoLeak(t testing.TB, f *fixture, value string, outputs ...result) {
	t.Helper()
	for _, r := range outputs {
		if strings.Contains(r.stdout+r.stderr, value) {
			t.Errorf("pgphi %s printed the value %q:\n%s", shortArgs(r.args), value, r)
		}
	}
	table, file := complAuditText(t, f)
	if strings.Contains(table, value) {
		t.Errorf("pgphi.audit_log contains the value %q", value)
	}
	if strings.Contains(file, value) {
		t.Errorf("the audit mirror file contains the value %q", value)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()

	t.Run("role not allowed", func(t *testing.T) {
		t.Parallel()
		rf := complRoleFixture(t, 50)
		f := rf.f
		// Production tables have statistics; this one is analyzed so that
		// pgphi need not count its rows (see the next subtest).
		f.exec(`ANALYZE patient`)

		r := complRun(f, rf.officerURL, "apply")
		complExpect(t, r, 4, "access denied", `apply needs role dba (member of `+rf.groups["dba"]+`)`, `connected as database role `+rf.officer)
		rec := complAssertRefused(t, f, "apply", "access denied")
		if rec.Actor.DBRole != rf.officer {
			t.Errorf("refusal recorded as database role %q, want %q", rec.Actor.DBRole, rf.officer)
		}
		if n := complEncryptedColumns(t, f); n != 0 {
			t.Errorf("refused apply added %d ciphertext columns", n)
		}

		// A superuser is refused too once access.allow_superuser is false.
		complExpect(t, f.run("apply"), 4, "access denied", `connected as database role postgres`)
		complAssertRefused(t, f, "apply", "access denied")

		// What the roles may do, they can: the audit officer verifies the
		// audit trail (the refusals are in it), the dba member plans.
		complExpect(t, complRun(f, rf.officerURL, "audit", "verify"), 0, "audit trail verified")
		complExpect(t, complRun(f, rf.dbaURL, "plan"), 0)
		if rec := complLastRecord(t, f); rec.Command != "plan" || rec.Event != audit.EventSuccess || rec.Actor.DBRole != rf.dba {
			t.Errorf("last audit record: %s %s by %q; want plan success by %q", rec.Command, rec.Event, rec.Actor.DBRole, rf.dba)
		}
		// The audit officer may not look up patients.
		complExpect(t, complRun(f, rf.officerURL, "search", "patient", "last_name", "--exact", "x", "--reason", "curious"), 4, "access denied")
		complAssertRefused(t, f, "search", "access denied")
	})

	// The access check must not depend on the table's statistics: a table
	// that was never analyzed (a new or small one; 10 rows stay below
	// autovacuum's analyze threshold) makes pgphi count its rows, which the
	// audit officer may not do (it has no access to application tables).
	t.Run("role not allowed, table never analyzed", func(t *testing.T) {
		t.Parallel()
		rf := complRoleFixture(t, 10)
		complExpect(t, complRun(rf.f, rf.officerURL, "apply"), 4, "access denied")
		complAssertRefused(t, rf.f, "apply", "access denied")
		complExpect(t, complRun(rf.f, rf.officerURL, "audit", "verify"), 0, "audit trail verified")
	})

	// approvalsFixture is a production database whose policy needs approvals
	// by require, with the given signers; the superuser is allowed (this
	// test is about approvals) and the loopback connection passes the TLS
	// policy.
	approvalsFixture := func(t *testing.T, header, require string, signers ...string) (*fixture, map[string]string) {
		f := newFixture(t, complYAML("environment: production\n"+header+"access: { allow_superuser: true }\napprovals:\n  signers: allowed_signers\n  require:\n    production: "+require+"\n", ""))
		complCreatePatient(f, 60, 0)
		keys := map[string]string{}
		var list []complSigner
		for _, s := range signers {
			fl := strings.Fields(s)
			name, role, db := fl[0], fl[1], ""
			if len(fl) > 2 {
				db = fl[2]
			}
			path, pub := complKey(t, f.dir, name)
			keys[name] = path
			list = append(list, complSigner{name, role, pub, db})
		}
		complWriteSigners(t, filepath.Join(f.dir, "allowed_signers"), list...)
		// The first run pins the policy, signers included.
		complExpect(t, f.run("keys", "init"), 0)
		return f, keys
	}

	t.Run("approvals missing", func(t *testing.T) {
		t.Parallel()
		f, keys := approvalsFixture(t, "", "{ dba: 1, healthcare_admin: 1 }", "alice dba", "bob healthcare_admin")
		plan := complPlanID(f)
		complExpect(t, f.run("apply"), 4, "approval required", "apply of plan id "+plan+" in environment production", "has no approvals",
			"needs 1 approval by dba, has 0", "needs 1 approval by healthcare_admin, has 0")
		complAssertRefused(t, f, "apply", "approval")

		complExpect(t, f.run("approve", plan, "--command", "apply", "--key", keys["alice"]), 0, "approved "+plan+" for production as alice (dba")
		complExpect(t, f.run("apply"), 4, "needs 1 approval by healthcare_admin, has 0")
		complAssertRefused(t, f, "apply", "approval")
		if n := complEncryptedColumns(t, f); n != 0 {
			t.Fatalf("refused apply added %d ciphertext columns", n)
		}

		complExpect(t, f.run("approve", plan, "--command", "apply", "--key", keys["bob"]), 0, "as bob (healthcare_admin")
		complExpect(t, f.run("apply"), 4, "needs a backup verified by restoring it")
		kbRecordVerifiedBackup(f)
		complExpect(t, f.run("apply"), 0, "applied "+plan)
		if rec := complLastRecord(t, f); rec.Command != "apply" || rec.Event != audit.EventSuccess {
			t.Errorf("last audit record: %s %s, want apply success", rec.Command, rec.Event)
		}
	})

	t.Run("approvals of another plan id", func(t *testing.T) {
		t.Parallel()
		f, keys := approvalsFixture(t, "", "{ dba: 1, healthcare_admin: 1 }", "alice dba", "bob healthcare_admin")
		const other = "plan-00000000000000000000"
		complExpect(t, f.run("approve", other, "--command", "apply", "--key", keys["alice"]), 0, "approved "+other)
		complExpect(t, f.run("approve", other, "--command", "apply", "--key", keys["bob"]), 0, "approved "+other)
		complExpect(t, f.run("apply"), 4, "approval required", "approvals exist for other plan ids", "needs 1 approval by dba, has 0")
		complAssertRefused(t, f, "apply", "approval")
	})

	t.Run("self-approval only", func(t *testing.T) {
		t.Parallel()
		// The executor is the connected database role (postgres here), the
		// database role alice's signer entry names; not actor: from the YAML.
		f, keys := approvalsFixture(t, "actor: bob\n", "{ dba: 1 }", "alice dba postgres", "bob dba")
		plan := complPlanID(f)
		complExpect(t, f.run("approve", plan, "--command", "apply", "--key", keys["alice"]), 0)
		complExpect(t, f.run("apply"), 4, "the executor (database role postgres) cannot be the only approver")
		complAssertRefused(t, f, "apply", "approval")
		complExpect(t, f.run("approve", plan, "--command", "apply", "--key", keys["bob"]), 0)
		kbRecordVerifiedBackup(f)
		complExpect(t, f.run("apply"), 0, "applied "+plan)
	})

	t.Run("bad signature", func(t *testing.T) {
		t.Parallel()
		f, keys := approvalsFixture(t, "", "{ dba: 1, healthcare_admin: 1 }", "alice dba", "bob healthcare_admin")
		plan := complPlanID(f)
		complExpect(t, f.run("approve", plan, "--command", "apply", "--key", keys["alice"]), 0)
		complExpect(t, f.run("approve", plan, "--command", "apply", "--key", keys["bob"]), 0)
		// Someone with write access to pgphi.approvals alters bob's approval.
		f.exec(`UPDATE pgphi.approvals SET signature = set_byte(signature, 10, get_byte(signature, 10) # 1) WHERE signer = 'bob'`)
		// The altered row is ignored and reported (it blocks nothing else).
		complExpect(t, f.run("apply"), 4, "needs 1 approval by healthcare_admin, has 0", "ignored the approval row by bob", "bad signature")
		complAssertRefused(t, f, "apply", "approval")
		if n := complEncryptedColumns(t, f); n != 0 {
			t.Errorf("refused apply added %d ciphertext columns", n)
		}
	})

	t.Run("failing pre_execute hook", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "")
		stdin := filepath.Join(f.dir, "hook-stdin.json")
		hook := filepath.Join(f.dir, "veto.sh")
		writeFile(t, hook, "#!/bin/sh\ncat > '"+stdin+"'\necho 'change freeze in effect' >&2\nexit 3\n")
		if err := os.Chmod(hook, 0o755); err != nil {
			t.Fatal(err)
		}
		f.writeConfig(complYAML("environment: test\nhooks:\n  pre_execute: ['"+hook+"']\n", ""))
		complCreatePatient(f, 60, 0)
		complExpect(t, f.run("keys", "init"), 0)
		plan := complPlanID(f)

		r := f.run("apply")
		complExpect(t, r, 4, "hook failed", "pre_execute hook "+hook+": exited with code 3")
		complAssertRefused(t, f, "apply", "hook")
		if n := complEncryptedColumns(t, f); n != 0 {
			t.Errorf("apply vetoed by its pre_execute hook added %d ciphertext columns", n)
		}
		data, err := os.ReadFile(stdin)
		if err != nil {
			t.Fatalf("the hook did not run or got no stdin: %v", err)
		}
		var hc struct {
			Phase       string   `json:"phase"`
			Command     string   `json:"command"`
			PlanID      string   `json:"plan_id"`
			Environment string   `json:"environment"`
			Reason      string   `json:"reason"`
			Tables      []string `json:"tables"`
		}
		if err := json.Unmarshal(data, &hc); err != nil {
			t.Fatalf("hook stdin is not JSON: %v\n%s", err, data)
		}
		if hc.Phase != "pre_execute" || hc.Command != "apply" || hc.PlanID != plan || hc.Environment != "test" || hc.Reason != "e2e test" || !slices.Contains(hc.Tables, "public.patient") {
			t.Errorf("hook stdin: %s\nwant phase pre_execute, command apply, plan_id %s, environment test, reason \"e2e test\", tables [public.patient]", data, plan)
		}
		if strings.Contains(string(data), complCanary) {
			t.Errorf("hook stdin contains a data value: %s", data)
		}
	})

	t.Run("validation", func(t *testing.T) {
		t.Parallel()
		validate := `, validate: { pattern: '^\d{3}-\d{2}-\d{4}$' }`
		f := newFixture(t, complYAML("environment: test\nvalidation: { on_violation: fail }\n", validate))
		complCreatePatient(f, 80, 3)
		complExpect(t, f.run("keys", "init"), 0)

		fail := f.run("apply")
		complExpect(t, fail, 4, "validation failed", "public.patient.ssn pattern: 3 rows violate it")
		complAssertRefused(t, f, "apply", "validation")
		if n := complEncryptedColumns(t, f); n != 0 {
			t.Errorf("apply refused by validation added %d ciphertext columns", n)
		}

		f.writeConfig(complYAML("environment: test\nvalidation: { on_violation: warn }\n", validate))
		warn := f.run("apply")
		complExpect(t, warn, 0, "applied")
		if !strings.Contains(warn.stderr, "public.patient.ssn pattern: 3 rows violate it") {
			t.Errorf("apply with on_violation: warn does not report the 3 violating rows on stderr:\n%s", warn)
		}
		complAssertNoLeak(t, f, complViolation, fail, warn)
	})

	t.Run("TLS not verified", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "")
		caPEM, _, _ := complCert(t, true)
		writeFile(t, filepath.Join(f.dir, "unrelated-ca.pem"), string(caPEM))
		randomPin := base64.StdEncoding.EncodeToString([]byte(complRandHex(t, 16))) // 32 bytes

		// The harness server has no TLS: requiring it is refused (4), not
		// "cannot connect" (3), and nothing falls back to plaintext.
		f.writeConfig(complYAML("environment: test\ndatabase:\n  tls: { mode: verify-full, ca: unrelated-ca.pem }\n", ""))
		complExpect(t, f.run("status"), 4, "TLS verification failed", "server refused TLS")
		f.writeConfig(complYAML("environment: test\ndatabase:\n  tls: { mode: require, pin_sha256: ['"+randomPin+"'] }\n", ""))
		complExpect(t, f.run("status"), 4, "TLS verification failed", "server refused TLS")

		// A server that speaks TLS with a certificate nobody signed.
		addr, serverPin := complFakeTLSServer(t)
		fake := "postgres://postgres@" + addr + "/nowhere?sslmode=disable"
		f.writeConfig(complYAML("environment: test\ndatabase:\n  tls: { mode: verify-full, ca: unrelated-ca.pem }\n", ""))
		complExpect(t, complRun(f, fake, "status"), 4, "TLS verification failed", "certificate")
		f.writeConfig(complYAML("environment: test\ndatabase:\n  tls: { mode: require, pin_sha256: ['"+randomPin+"'] }\n", ""))
		complExpect(t, complRun(f, fake, "status"), 4, "the server's key matches no pin", serverPin)
		// The right pin passes TLS (and then fails at the fake's protocol:
		// not a refusal).
		f.writeConfig(complYAML("environment: test\ndatabase:\n  tls: { mode: require, pin_sha256: ['"+serverPin+"'] }\n", ""))
		if r := complRun(f, fake, "status"); r.code == 4 || strings.Contains(r.stderr, "matches no pin") {
			t.Errorf("the server's own pin is refused: %s", r)
		}
	})
}

// complRoles is a database with its own group roles (access.roles), a
// login role in the audit officer group and one in the dba group, and a
// config that refuses the superuser.
type complRoles struct {
	f                  *fixture
	groups             map[string]string
	officer, dba       string
	officerURL, dbaURL string
}

func complRoleFixture(t *testing.T, rows int) complRoles {
	t.Helper()
	// Roles are cluster-wide: each test names its own.
	sfx := complRandHex(t, 4)
	rf := complRoles{
		groups:  map[string]string{"dba": "g_dba_" + sfx, "healthcare_admin": "g_ha_" + sfx, "audit_officer": "g_ao_" + sfx},
		officer: "officer_" + sfx,
		dba:     "dbauser_" + sfx,
	}
	rolesYAML := "access:\n  roles: { dba: " + rf.groups["dba"] + ", healthcare_admin: " + rf.groups["healthcare_admin"] + ", audit_officer: " + rf.groups["audit_officer"] + " }\n"
	f := newFixture(t, complYAML("environment: test\n"+rolesYAML, ""))
	rf.f = f
	complCreatePatient(f, rows, 0)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, f.url)
		if err != nil {
			t.Errorf("dropping test roles: %v", err)
			return
		}
		defer c.Close(ctx)
		names := pgx.Identifier{rf.officer}.Sanitize() + ", " + pgx.Identifier{rf.dba}.Sanitize()
		for _, g := range rf.groups {
			names += ", " + pgx.Identifier{g}.Sanitize()
		}
		if _, err := c.Exec(ctx, "DROP OWNED BY "+names+"; DROP ROLE IF EXISTS "+names); err != nil {
			t.Errorf("dropping test roles: %v", err)
		}
	})
	complExpect(t, f.run("roles", "init"), 0)
	f.exec(`CREATE ROLE ` + rf.officer + ` LOGIN IN ROLE ` + rf.groups["audit_officer"])
	f.exec(`CREATE ROLE ` + rf.dba + ` LOGIN IN ROLE ` + rf.groups["dba"])
	f.writeConfig(complYAML("environment: test\n"+rolesYAML+"  allow_superuser: false\n", ""))
	// allow_superuser is pinned: the change goes through pins set (no
	// approvals needed in environment test).
	complExpect(t, f.run("pins", "set", "--from-config"), 0, "pinned")
	rf.officerURL, rf.dbaURL = complURLAs(t, f.url, rf.officer), complURLAs(t, f.url, rf.dba)
	return rf
}

// complCert makes a self-signed certificate for 127.0.0.1 (a CA when ca).
func complCert(t testing.TB, ca bool) (certPEM []byte, cert tls.Certificate, pin string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pgphi e2e " + complRandHex(t, 4)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         ca,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(parsed.RawSubjectPublicKeyInfo)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		"sha256/" + base64.StdEncoding.EncodeToString(sum[:])
}

// complFakeTLSServer listens on loopback and answers PostgreSQL's SSLRequest
// with a TLS handshake under a self-signed certificate, then hangs up. It
// returns its address and the pin of its key.
func complFakeTLSServer(t testing.TB) (addr, pin string) {
	t.Helper()
	_, cert, pin := complCert(t, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	serve := func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		for {
			var req [8]byte
			if _, err := io.ReadFull(c, req[:]); err != nil {
				return
			}
			switch binary.BigEndian.Uint32(req[4:]) {
			case 80877104: // GSSENCRequest
				if _, err := c.Write([]byte{'N'}); err != nil {
					return
				}
			case 80877103: // SSLRequest
				if _, err := c.Write([]byte{'S'}); err != nil {
					return
				}
				_ = tls.Server(c, cfg).Handshake()
				return
			default:
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String(), pin
}

// complAuditFixture is a database after keys init, apply (with a reason),
// status, verify and a search for the canary (with reason "front desk").
func complAuditFixture(t *testing.T, header string) *fixture {
	t.Helper()
	f := newFixture(t, complYAML("environment: test\n"+header, ""))
	complCreatePatient(f, 100, 0)
	complExpect(t, f.run("keys", "init"), 0)
	complExpect(t, f.run("apply", "--reason", "encrypt patient CHG-1"), 0)
	f.status()
	f.verifyOK(100)
	r := f.run("search", "patient", "last_name", "--exact", complCanary, "--reason", "front desk")
	complExpect(t, r, 0)
	if strings.TrimSpace(r.stdout) != "7" {
		t.Errorf("search for the canary: got %q, want row 7", r.stdout)
	}
	return f
}

// complQueryLines runs a query of one text column and returns its rows, one a line.
func complQueryLines(t testing.TB, c *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	if len(vals) == 0 {
		return ""
	}
	return strings.Join(vals, "\n") + "\n"
}

// complRecords parses every line of the mirror file.
func complRecords(t testing.TB, f *fixture) (lines []string, recs []audit.Record) {
	t.Helper()
	data, err := os.ReadFile(complMirror(f))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		rec, err := audit.ParseRecord([]byte(l))
		if err != nil {
			t.Fatalf("mirror line %d: %v", len(lines)+1, err)
		}
		lines = append(lines, l)
		recs = append(recs, rec)
	}
	return lines, recs
}

// complTableRecords parses every record of pgphi.audit_log, in seq order.
func complTableRecords(t testing.TB, f *fixture) []audit.Record {
	t.Helper()
	var recs []audit.Record
	for _, l := range strings.Split(strings.TrimSuffix(complQueryLines(t, f.conn(), `SELECT record::text FROM pgphi.audit_log ORDER BY seq`), "\n"), "\n") {
		rec, err := audit.ParseRecord([]byte(l))
		if err != nil {
			t.Fatalf("audit_log record %d: %v", len(recs)+1, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// complSuperExec runs statements as the superuser in one transaction.
func complSuperExec(t testing.TB, f *fixture, fn func(tx pgx.Tx) error) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, f.conn(), fn)
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuditTrail(t *testing.T) {
	t.Parallel()

	t.Run("records", func(t *testing.T) {
		t.Parallel()
		f := complAuditFixture(t, "")
		complExpect(t, f.run("audit", "verify"), 0, "audit trail verified")

		lines, recs := complRecords(t, f)
		table := complTableRecords(t, f)
		if len(lines) != len(table) {
			t.Fatalf("the mirror has %d lines, the table %d records", len(lines), len(table))
		}
		commands := map[string]bool{}
		for i, rec := range recs {
			if got := string(table[i].CanonicalJSON()); got != lines[i] {
				t.Errorf("record %d differs between table and mirror:\n table %s\n file  %s", i+1, got, lines[i])
			}
			if rec.Seq != int64(i+1) {
				t.Errorf("mirror line %d holds record %d", i+1, rec.Seq)
			}
			if rec.Command == "" || rec.Actor.OSUser == "" || rec.Actor.DBRole != "postgres" || rec.RunID == "" {
				t.Errorf("record %d: command %q, actor os_user %q db_role %q, run_id %q; want all set (db_role postgres)",
					rec.Seq, rec.Command, rec.Actor.OSUser, rec.Actor.DBRole, rec.RunID)
			}
			commands[rec.Command] = true
			switch rec.Command {
			case "apply":
				if rec.Reason != "encrypt patient CHG-1" {
					t.Errorf("apply record %d: reason %q, want the --reason given", rec.Seq, rec.Reason)
				}
			case "search":
				if rec.Reason != "front desk" {
					t.Errorf("search record %d: reason %q, want \"front desk\"", rec.Seq, rec.Reason)
				}
			}
		}
		for _, c := range []string{"apply", "status", "verify", "search", "audit"} {
			if !commands[c] {
				t.Errorf("no audit record of %s", c)
			}
		}
		// Every run has a start and one end record.
		runs := map[string][]string{}
		for _, rec := range recs {
			runs[rec.RunID] = append(runs[rec.RunID], rec.Event)
		}
		for id, ev := range runs {
			if len(ev) != 2 || ev[0] != audit.EventStart || (ev[1] != audit.EventSuccess && ev[1] != audit.EventFailure && ev[1] != audit.EventRefused) {
				if !(len(ev) == 1 && ev[0] == audit.EventStart) { // the running audit verify's own end is after the read
					t.Errorf("run %s has events %v, want start then one end", id, ev)
				}
			}
		}
		// The planted value and the search term reach no record.
		complAssertNoLeak(t, f, complCanary)
		if fi, err := os.Stat(complMirror(f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("audit mirror mode: %v %v, want 0600", fi.Mode().Perm(), err)
		}
	})

	// keys and flags change key material and what applications do: like
	// every command that touches the database they must run inside the
	// compliance wrapper, leaving audit records and honouring the role
	// policy (keys and `flags set` are for dba only; a superuser is refused
	// when access.allow_superuser is false).
	t.Run("keys and flags are guarded", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, complYAML("environment: test\n", ""))
		complCreatePatient(f, 10, 0)
		complExpect(t, f.run("keys", "init"), 0)
		complExpect(t, f.run("keys", "rotate"), 0)
		complExpect(t, f.run("flags", "set", "use_encrypted_search", "on"), 0)
		for _, cmd := range []string{"keys", "flags"} {
			if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.audit_log WHERE record->>'command' LIKE $1`, cmd+"%"); n == 0 {
				t.Errorf("`pgphi %s` left no audit record", cmd)
			}
		}
		f.writeConfig(complYAML("environment: test\naccess: { allow_superuser: false }\n", ""))
		complExpect(t, f.run("apply"), 4, "pins") // proposed, not yet pinned
		complExpect(t, f.run("pins", "set", "--from-config"), 0, "pinned")
		complExpect(t, f.run("apply"), 4, "access denied") // the policy is in force
		if r := f.run("flags", "set", "require_encryption", "on"); r.code != 4 {
			t.Errorf("flags set by a refused superuser: want exit 4 (access denied), got %s", r)
		}
		if r := f.run("keys", "rotate"); r.code != 4 {
			t.Errorf("keys rotate by a refused superuser: want exit 4 (access denied), got %s", r)
		}
	})

	t.Run("table tampering", func(t *testing.T) {
		t.Parallel()
		f := complAuditFixture(t, "")
		ctx := context.Background()
		c := f.conn()

		// With the trigger in place nobody, not even a superuser, edits history.
		for _, sql := range []string{
			`UPDATE pgphi.audit_log SET record = jsonb_set(record, '{reason}', '"edited"') WHERE seq = 3`,
			`DELETE FROM pgphi.audit_log WHERE seq = 3`,
			`TRUNCATE pgphi.audit_log`,
		} {
			_, err := c.Exec(ctx, sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Errorf("%s: got %v, want SQLSTATE 42501", sql, err)
			}
		}

		// A superuser disables the trigger and edits a reason.
		var original string
		if err := c.QueryRow(ctx, `SELECT record::text FROM pgphi.audit_log WHERE seq = 3`).Scan(&original); err != nil {
			t.Fatal(err)
		}
		complSuperExec(t, f, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `ALTER TABLE pgphi.audit_log DISABLE TRIGGER USER;
				UPDATE pgphi.audit_log SET record = jsonb_set(record, '{reason}', '"nothing to see"') WHERE seq = 3;
				ALTER TABLE pgphi.audit_log ENABLE TRIGGER USER`)
			return err
		})
		complExpect(t, f.run("audit", "verify"), 1, "TAMPERED table record #3: hash-mismatch", "file and table differ at record #3", "audit trail verification failed")

		// Put it back; then delete a record in the middle.
		complSuperExec(t, f, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `ALTER TABLE pgphi.audit_log DISABLE TRIGGER USER`)
			if err == nil {
				_, err = tx.Exec(ctx, `UPDATE pgphi.audit_log SET record = $1::jsonb WHERE seq = 3`, original)
			}
			if err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM pgphi.audit_log WHERE seq = 5; ALTER TABLE pgphi.audit_log ENABLE TRIGGER USER`)
			}
			return err
		})
		r := f.run("audit", "verify")
		complExpect(t, r, 1, "TAMPERED table record #5: gap record 5 is missing", "file and table differ at record #5")
		if strings.Contains(r.stdout, "record #3") {
			t.Errorf("record 3 was restored but is still reported:\n%s", r.stdout)
		}
	})

	t.Run("file tampering", func(t *testing.T) {
		t.Parallel()
		f := complAuditFixture(t, "")
		path := complMirror(f)
		original, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(original), "\n")
		restore := func() {
			t.Helper()
			if err := os.WriteFile(path, original, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// Which line holds the apply start record (its reason is edited).
		applyLine := -1
		for i, l := range lines {
			if strings.Contains(l, `"reason":"encrypt patient CHG-1"`) {
				applyLine = i
				break
			}
		}
		if applyLine < 0 {
			t.Fatalf("no apply record in the mirror:\n%s", original)
		}
		seq := applyLine + 1

		// An edited line.
		edited := slices.Clone(lines)
		edited[applyLine] = strings.Replace(edited[applyLine], "CHG-1", "CHG-2", 1)
		writeFile(t, path, strings.Join(edited, ""))
		complExpect(t, f.run("audit", "verify"), 1, "TAMPERED file record #"+complItoa(seq)+": hash-mismatch", "file and table differ at record #"+complItoa(seq))
		restore()
		complExpect(t, f.run("audit", "verify"), 0, "audit trail verified")

		// A deleted line.
		deleted := slices.Delete(slices.Clone(lines), applyLine, applyLine+1)
		writeFile(t, path, strings.Join(deleted, ""))
		complExpect(t, f.run("audit", "verify"), 1, "TAMPERED file record #"+complItoa(seq)+": gap", "file and table differ at record #"+complItoa(seq))
		restore()
		complExpect(t, f.run("audit", "verify"), 0, "audit trail verified")

		// A last line rewritten with a recomputed hash no longer matches the
		// table: every other command stops (FORMAT.md, section 4) until the
		// operator deals with it; audit verify still runs and names it.
		cur, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		curLines := strings.SplitAfter(string(cur), "\n")
		curLines = curLines[:len(curLines)-1] // after the final newline
		last := len(curLines)
		rec, err := audit.ParseRecord([]byte(strings.TrimSuffix(curLines[last-1], "\n")))
		if err != nil {
			t.Fatal(err)
		}
		rec.Actor.DBRole = "someone"
		rec.Hash = rec.ComputeHash()
		curLines[last-1] = string(rec.CanonicalJSON()) + "\n"
		writeFile(t, path, strings.Join(curLines, ""))
		complExpect(t, f.run("status"), 1, "writing the audit record", "differ at seq "+complItoa(last))
		complExpect(t, f.run("audit", "verify"), 1, "file and table differ at record #"+complItoa(last))
		writeFile(t, path, string(cur))
		complExpect(t, f.run("status"), 0)
		complExpect(t, f.run("audit", "verify"), 0, "audit trail verified")
	})

	// The same, but the edited last line keeps its old hash: the mirror
	// still differs from the table and must stop appends (FORMAT.md,
	// section 4: "A mirror whose last line ... differs from the table stops
	// every append").
	t.Run("mirror tail edited in place", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, complYAML("environment: test\n", ""))
		complCreatePatient(f, 10, 0)
		complExpect(t, f.run("plan"), 0)
		path := complMirror(f)
		cur, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(cur), "\n")
		lines = lines[:len(lines)-1]
		last := len(lines)
		lines[last-1] = strings.Replace(lines[last-1], `"db_role":"postgres"`, `"db_role":"someone"`, 1)
		writeFile(t, path, strings.Join(lines, ""))
		if r := f.run("plan"); r.code == 0 {
			t.Errorf("a command appended to a mirror whose last line (record %d) was edited: %s", last, r)
		}
		complExpect(t, f.run("audit", "verify"), 1, "TAMPERED file record #"+complItoa(last)+": hash-mismatch")
	})

	t.Run("checkpoint", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "")
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := policy.MarshalPrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.dir, "checkpoint.pem"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		pub := priv.Public().(ed25519.PublicKey)
		f.writeConfig(complYAML("environment: test\naudit:\n  signing_key: checkpoint.pem\n  public_key: "+policy.AuthorizedKey(pub)+"\n", ""))
		complCreatePatient(f, 100, 0)
		complExpect(t, f.run("keys", "init"), 0)
		complExpect(t, f.run("apply", "--reason", "encrypt patient CHG-1"), 0)
		f.verifyOK(100)

		r := f.run("audit", "checkpoint")
		complExpect(t, r, 0)
		var cp audit.Checkpoint
		if err := json.Unmarshal([]byte(r.stdout), &cp); err != nil || cp.Seq < 4 || len(cp.Hash) != 64 || cp.Signature == "" {
			t.Fatalf("audit checkpoint printed %q (%v); want a signed checkpoint of the head", r.stdout, err)
		}
		if cp.KeyFingerprint != policy.Fingerprint(pub) {
			t.Errorf("checkpoint key %s, want %s", cp.KeyFingerprint, policy.Fingerprint(pub))
		}
		cpFile := filepath.Join(t.TempDir(), "checkpoint.json")
		writeFile(t, cpFile, r.stdout)

		// History grows after the checkpoint.
		f.status()
		f.verifyOK(100)
		complExpect(t, f.run("audit", "verify", "--checkpoint", cpFile), 0,
			"checkpoint #"+complItoa(int(cp.Seq))+": the log still contains it and only grew since", "audit trail verified")

		// A checkpoint whose content was changed has no valid signature.
		forged := cp
		forged.Seq--
		forgedJSON, _ := json.Marshal(forged)
		forgedFile := filepath.Join(t.TempDir(), "forged.json")
		writeFile(t, forgedFile, string(forgedJSON))
		complExpect(t, f.run("audit", "verify", "--checkpoint", forgedFile), 1, "CHECKPOINT signature invalid")

		// A superuser rewrites history consistently: record 3 (before the
		// checkpoint) gets another reason, every later hash is recomputed,
		// the stored checkpoints are removed and the mirror is rewritten.
		recs := complTableRecords(t, f)
		const target = 3
		recs[target-1].Reason = "rewritten history"
		for i := target - 1; i < len(recs); i++ {
			if i > 0 {
				recs[i].Prev = recs[i-1].Hash
			}
			recs[i].Hash = recs[i].ComputeHash()
		}
		ctx := context.Background()
		complSuperExec(t, f, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `ALTER TABLE pgphi.audit_log DISABLE TRIGGER USER; ALTER TABLE pgphi.audit_checkpoints DISABLE TRIGGER USER`); err != nil {
				return err
			}
			for _, rec := range recs[target-1:] {
				if _, err := tx.Exec(ctx, `UPDATE pgphi.audit_log SET record = $1::jsonb, hash = $2, prev = $3 WHERE seq = $4`,
					string(rec.CanonicalJSON()), rec.Hash, rec.Prev, rec.Seq); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `DELETE FROM pgphi.audit_checkpoints;
				ALTER TABLE pgphi.audit_log ENABLE TRIGGER USER; ALTER TABLE pgphi.audit_checkpoints ENABLE TRIGGER USER`)
			return err
		})
		var mirror strings.Builder
		for _, rec := range recs {
			mirror.Write(rec.CanonicalJSON())
			mirror.WriteByte('\n')
		}
		if err := os.WriteFile(complMirror(f), []byte(mirror.String()), 0o600); err != nil {
			t.Fatal(err)
		}

		// The chain and the mirror are consistent again: only the kept
		// checkpoint shows the rewrite.
		complExpect(t, f.run("audit", "verify"), 0, "audit trail verified")
		r = f.run("audit", "verify", "--checkpoint", cpFile)
		complExpect(t, r, 1, "CHECKPOINT #"+complItoa(int(cp.Seq))+" not in the log any more", "audit trail verification failed")
		if strings.Contains(r.stdout, "TAMPERED") || strings.Contains(r.stdout, "MISMATCH") {
			t.Errorf("the consistent rewrite should be visible only through the checkpoint:\n%s", r.stdout)
		}
	})

	t.Run("export and archive", func(t *testing.T) {
		t.Parallel()
		f := complAuditFixture(t, "")
		before := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.audit_log`)
		r := f.run("audit", "export")
		complExpect(t, r, 0)
		exported := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if int64(len(exported)) < before {
			t.Fatalf("export printed %d lines, the table held %d records before it", len(exported), before)
		}
		mirror, _ := complRecords(t, f)
		for i, l := range exported {
			if _, err := audit.ParseRecord([]byte(l)); err != nil {
				t.Fatalf("export line %d: %v", i+1, err)
			}
			if i >= len(mirror) || l != mirror[i] {
				t.Errorf("export line %d differs from the mirror's", i+1)
			}
		}
		complAssertNoLeak(t, f, complCanary, r)

		// A range.
		r = f.run("audit", "export", "--from", "2", "--to", "3")
		complExpect(t, r, 0)
		if got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); len(got) != 2 || got[0] != mirror[1] || got[1] != mirror[2] {
			t.Errorf("export --from 2 --to 3 printed:\n%s\nwant records 2 and 3", r.stdout)
		}

		dir := t.TempDir()
		r = f.run("audit", "archive", "--dir", dir, "--older-than", "0s")
		complExpect(t, r, 0, "archived ")
		archives, _ := filepath.Glob(filepath.Join(dir, "pgphi-audit-*.jsonl.gz"))
		if len(archives) != 1 {
			t.Fatalf("archive wrote %v, want one pgphi-audit-*.jsonl.gz", archives)
		}
		path := archives[0]
		if !strings.Contains(r.stdout, path) || !strings.Contains(r.stdout, path+".sha256") {
			t.Errorf("archive output does not name %s and its checksum:\n%s", path, r.stdout)
		}
		mirror, _ = complRecords(t, f)
		gz, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sumLine, err := os.ReadFile(path + ".sha256")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(gz)
		if want := hex.EncodeToString(sum[:]) + "  " + filepath.Base(path) + "\n"; string(sumLine) != want {
			t.Errorf("%s.sha256 = %q, want %q", filepath.Base(path), sumLine, want)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, audit.MaxRecordSize+1)
		n := 0
		for sc.Scan() {
			if n >= len(mirror) || sc.Text() != mirror[n] {
				t.Errorf("archive line %d differs from the mirror's", n+1)
			}
			n++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if int64(n) < before {
			t.Errorf("the archive holds %d records, want at least the %d recorded before", n, before)
		}
		if err := audit.VerifyArchive(path); err != nil {
			t.Errorf("VerifyArchive: %v", err)
		}
	})
}

func complItoa(n int) string { return strconv.Itoa(n) }

// complReport is `pgphi report --format json`.
type complReport struct {
	PlanID       string `json:"plan_id"`
	Verdict      string `json:"verdict"`
	Approved     bool   `json:"approved"`
	Requirements []struct {
		Requirement string `json:"requirement"`
		Met         bool   `json:"met"`
		Evidence    string `json:"evidence"`
	} `json:"requirements"`
}

func complGetReport(t testing.TB, f *fixture) complReport {
	t.Helper()
	r := f.run("report", "--format", "json")
	complExpect(t, r, 0)
	var rep complReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report --format json: %v\n%s", err, r.stdout)
	}
	// The verdict follows the items: approved exactly when all are met.
	all := len(rep.Requirements) > 0
	for _, i := range rep.Requirements {
		all = all && i.Met
	}
	if rep.Approved != all || (rep.Verdict == "APPROVED FOR PRODUCTION") != all {
		t.Errorf("report: verdict %q, approved %v, but every requirement met = %v:\n%s", rep.Verdict, rep.Approved, all, r.stdout)
	}
	return rep
}

// unmet returns the requirements not met.
func (r complReport) unmet() []string {
	var out []string
	for _, i := range r.Requirements {
		if !i.Met {
			out = append(out, i.Requirement)
		}
	}
	return out
}

func TestReport(t *testing.T) {
	t.Parallel()
	f := newFixture(t, complYAML("environment: test\n", ", validate: { max_length: 20 }"))
	complCreatePatient(f, 150, 0)
	complExpect(t, f.run("keys", "init"), 0)
	complExpect(t, f.run("apply"), 0)
	plan := complPlanID(f)
	f.verifyOK(150)

	// Without a pre-flight check on record the report does not approve.
	rep := complGetReport(t, f)
	if rep.Approved || !slices.Equal(rep.unmet(), []string{"pre-flight checklist passed"}) {
		t.Errorf("report before any check: approved %v, unmet %v; want only the checklist unmet", rep.Approved, rep.unmet())
	}

	complExpect(t, f.run("check"), 0)
	rep = complGetReport(t, f)
	want := []string{
		"pre-flight checklist passed",
		"approvals meet the environment's policy",
		"PHI validation before migration",
		"migration applied",
		"every value verified by decryption",
		"no value left unencrypted",
		"audit trail intact",
	}
	var got []string
	for _, i := range rep.Requirements {
		got = append(got, i.Requirement)
		if strings.TrimSpace(i.Evidence) == "" {
			t.Errorf("requirement %q has no evidence", i.Requirement)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("report requirements:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if !rep.Approved || rep.Verdict != "APPROVED FOR PRODUCTION" || rep.PlanID != plan {
		t.Errorf("report after check, apply and verify: plan %s, verdict %q, unmet %v; want APPROVED FOR PRODUCTION for %s", rep.PlanID, rep.Verdict, rep.unmet(), plan)
	}

	md := f.run("report", "--format", "md")
	complExpect(t, md, 0, "# HIPAA compliance report: "+plan, "**APPROVED FOR PRODUCTION**")
	html := f.run("report", "--format", "html")
	complExpect(t, html, 0, plan, "APPROVED FOR PRODUCTION")
	if !strings.HasPrefix(html.stdout, "<!doctype html>") || !strings.HasSuffix(strings.TrimSpace(html.stdout), "</html>") {
		t.Errorf("html report is not a complete document:\n%s", html.stdout)
	}
	complAssertNoLeak(t, f, complCanary, md, html)
	// With the keys at hand the report measures what the blind index of
	// the searchable column leaks (per family and for the whole term set).
	if !strings.Contains(html.stdout, "whole term set: ") || strings.Contains(html.stdout, "not measured") {
		t.Errorf("html report does not show the measured leakage of last_name's blind index")
	}
	complExpect(t, f.run("report", "--format", "docx"), 2, "--format md, html, pdf or json")

	// A ciphertext altered behind pgphi's back: verify fails and the report
	// withdraws its approval, naming the verification.
	f.exec(`UPDATE patient SET last_name_encrypted = set_byte(last_name_encrypted, 20, get_byte(last_name_encrypted, 20) # 1) WHERE id = 42`)
	complExpect(t, f.run("verify"), 1, "MISMATCH public.patient.last_name", "1 mismatches")
	rep = complGetReport(t, f)
	if rep.Approved || !strings.HasPrefix(rep.Verdict, "NOT APPROVED") || !slices.Equal(rep.unmet(), []string{"every value verified by decryption"}) {
		t.Errorf("report after a failed verify: verdict %q, unmet %v; want NOT APPROVED with only the verification unmet", rep.Verdict, rep.unmet())
	}
	for _, i := range rep.Requirements {
		if i.Requirement == "every value verified by decryption" && !strings.Contains(i.Evidence, "1 mismatches") {
			t.Errorf("verification evidence %q does not count the mismatch", i.Evidence)
		}
	}
	complExpect(t, f.run("report", "--format", "md"), 0, "**NOT APPROVED", "| every value verified by decryption | **no** |")
}

// complChecklist is `pgphi check --json`.
type complChecklist struct {
	PlanID string `json:"plan_id"`
	Items  []struct {
		ID       string `json:"id"`
		Title    string `json:"title"`
		Required bool   `json:"required"`
		Passed   bool   `json:"passed"`
		Evidence string `json:"evidence"`
	} `json:"items"`
}

func TestCheck(t *testing.T) {
	t.Parallel()
	// One SSN breaks its rule; outside production that is a warning.
	f := newFixture(t, complYAML("environment: test\n", `, validate: { pattern: '^\d{3}-\d{2}-\d{4}$' }`))
	complCreatePatient(f, 40, 1)
	complExpect(t, f.run("keys", "init"), 0)

	decode := func(r result) complChecklist {
		t.Helper()
		var cl complChecklist
		if err := json.Unmarshal([]byte(r.stdout), &cl); err != nil {
			t.Fatalf("check --json: %v\n%s", err, r)
		}
		return cl
	}
	r := f.run("check", "--json")
	complExpect(t, r, 0)
	cl := decode(r)
	wantIDs := []string{"tls", "audit", "role", "keys", "key-usage", "backup", "approvals", "validation", "server-logs", "pgaudit", "disk", "triggers", "unprotected", "dependencies", "owner-code", "leakage"}
	wantEvidence := map[string]string{
		"tls":         "plaintext TCP (no TLS), loopback",
		"audit":       "records",
		"role":        "acts as dba",
		"keys":        "data key 1 active",
		"key-usage":   "data key 1 has made 0 encryptions",
		"backup":      "no backup was ever verified by restoring it",
		"approvals":   "environment test requires no approvals",
		"validation":  "public.patient.ssn pattern: 1 rows",
		"server-logs": "log_statement=none",
		"pgaudit":     "extension installed",
		"disk":        "free",
		"triggers":    "every expanded table has its pgphi triggers enabled",
		"owner-code":  "",
		// Before the first apply, every configured column is plaintext only.
		"unprotected": "UNPROTECTED, plaintext only until `pgphi apply` runs: public.patient.last_name (40 values), public.patient.ssn (40 values)",
	}
	var ids []string
	for _, c := range cl.Items {
		ids = append(ids, c.ID)
		if !strings.Contains(c.Evidence, wantEvidence[c.ID]) {
			t.Errorf("check item %s: evidence %q does not say %q", c.ID, c.Evidence, wantEvidence[c.ID])
		}
		switch c.ID {
		case "owner-code":
			// A recommendation outside production; the table has no owner code.
			if c.Required || !c.Passed {
				t.Errorf("check item %s: required %v passed %v (%s); want a passed recommendation", c.ID, c.Required, c.Passed, c.Evidence)
			}
		case "leakage":
			// Outside production a recommendation; 40 distinct last names
			// sized by distinct values keep two per term.
			if c.Required || !c.Passed || !strings.Contains(c.Evidence, "public.patient.last_name") {
				t.Errorf("check item %s: required %v passed %v (%s); want a passed recommendation naming last_name", c.ID, c.Required, c.Passed, c.Evidence)
			}
		case "validation", "pgaudit", "backup", "unprotected":
			if c.Required || c.Passed {
				t.Errorf("check item %s: required %v passed %v; want a failed recommendation (WARN)", c.ID, c.Required, c.Passed)
			}
		default:
			if !c.Required || !c.Passed {
				t.Errorf("check item %s: required %v passed %v (%s); want a passed requirement", c.ID, c.Required, c.Passed, c.Evidence)
			}
		}
	}
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("check items %v, want %v", ids, wantIDs)
	}
	complAssertNoLeak(t, f, complViolation, r)

	text := f.run("check")
	complExpect(t, text, 0, "PASS server settings do not write PHI into server logs", "WARN PHI validation rules hold")

	// The server starts writing statements, values included, to its log.
	var db string
	if err := f.conn().QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	ident := pgx.Identifier{db}.Sanitize()
	f.exec(`ALTER DATABASE ` + ident + ` SET log_statement = 'all'`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, f.url); err == nil {
			_, _ = c.Exec(ctx, `ALTER DATABASE `+ident+` RESET log_statement`)
			c.Close(ctx)
		}
	})
	r = f.run("check", "--json")
	complExpect(t, r, 4, "pre-flight check failed")
	for _, c := range decode(r).Items {
		if c.ID == "server-logs" && (c.Passed || !strings.Contains(c.Evidence, "log_statement=all logs every write with its values")) {
			t.Errorf("server-logs with log_statement=all: passed %v, evidence %q; want FAIL naming log_statement", c.Passed, c.Evidence)
		}
	}
	text = f.run("check")
	complExpect(t, text, 4, "FAIL server settings do not write PHI into server logs", "log_statement=all", "fix the FAIL items")
	if rec := complLastRecord(t, f); rec.Command != "check" || rec.Event != audit.EventRefused {
		t.Errorf("last audit record: %s %s, want check refused", rec.Command, rec.Event)
	}
}
