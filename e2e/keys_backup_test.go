package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/pgtest"
)

// Key lifecycle (status, retire, rewrap) and backups, through the binary.

const kbCanary = "CANARY-KB-5e1d"

// kbYAML is a config of a two-column patient table whose manifests are
// signed with keyPath.
func kbYAML(header, keyPath string) string {
	return "version: 1\nenvironment: test\n" + header + "audit: { signing_key: " + keyPath + " }\n" + `tables:
  patient:
    columns:
      first_name: { class: pii }
      ssn: { class: pii }
`
}

func kbFixture(t *testing.T, rows int) *fixture {
	t.Helper()
	f := newFixture(t, "")
	key, _ := complKey(t, f.dir, "auditor")
	f.writeConfig(kbYAML("", key))
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, ssn text)`)
	kbInsert(f, 1, rows)
	return f
}

// kbInsert adds rows from..to; every first name carries the canary.
func kbInsert(f *fixture, from, to int) {
	f.t.Helper()
	f.exec(`INSERT INTO patient SELECT g, $3 || '-' || g, lpad(g::text, 3, '0') || '-12-3456' FROM generate_series($1::int, $2::int) g`, from, to, kbCanary)
}

type kbStatus struct {
	Keys []struct {
		ID           uint32   `json:"id"`
		State        string   `json:"state"`
		Ciphertexts  int64    `json:"ciphertexts"`
		Encryptions  int64    `json:"encryptions"`
		BlindIndexes []string `json:"blind_indexes"`
		Backups      []string `json:"backups"`
	} `json:"keys"`
}

func kbKeyStatus(t *testing.T, f *fixture) map[uint32][3]int64 {
	t.Helper()
	r := f.mustRun("keys", "status", "--json")
	var st kbStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("keys status --json: %v\n%s", err, r)
	}
	out := map[uint32][3]int64{}
	for _, k := range st.Keys {
		active := int64(0)
		if k.State == "active" {
			active = 1
		}
		out[k.ID] = [3]int64{k.Ciphertexts, k.Encryptions, active}
	}
	return out
}

// TestKeysStatusRetire: status counts ciphertexts per key from the envelope
// headers after a rotation and new writes; retire refuses the active key,
// a key that ciphertexts or a backup still need (listing them), then
// destroys the wrapped copy once nothing does, audited.
func TestKeysStatusRetire(t *testing.T) {
	t.Parallel()
	f := kbFixture(t, 30)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	st := kbKeyStatus(t, f)
	if st[1][0] != 60 || st[1][1] < 60 || st[1][2] != 1 {
		t.Fatalf("after apply: key 1 = (ciphertexts, encryptions, active) %v, want (60, >=60, 1)", st[1])
	}

	f.mustRun("keys", "rotate")
	kbInsert(f, 31, 40)
	f.mustRun("apply")
	st = kbKeyStatus(t, f)
	if st[1][0] != 60 || st[2][0] != 20 || st[2][1] < 20 || st[2][2] != 1 {
		t.Fatalf("after rotate and 10 new rows: %v, want key 1 with 60 ciphertexts, key 2 active with 20", st)
	}
	text := f.mustRun("keys", "status")
	if !strings.Contains(text.stdout, "public.patient.first_name: 30") {
		t.Errorf("keys status does not break the count down by column:\n%s", text.stdout)
	}

	complExpect(t, f.run("keys", "retire", "2"), 4, "active")
	complExpect(t, f.run("keys", "retire", "1"), 4, "still in use", "30 ciphertexts in public.patient.first_name", "30 ciphertexts in public.patient.ssn")
	complExpect(t, f.run("keys", "retire", "x"), 2)

	// A backup taken now holds values under key 1.
	file := filepath.Join(f.dir, "before.pgphi")
	complExpect(t, f.run("backup", "--out", file), 0, "not yet verified")
	var backupID string
	if err := f.conn().QueryRow(context.Background(), `SELECT backup_id FROM pgphi.backups WHERE 1 = ANY (key_ids) AND 2 = ANY (key_ids)`).Scan(&backupID); err != nil {
		t.Fatalf("the backup is not recorded with key ids 1 and 2: %v", err)
	}

	// The values under key 1 go away; the backup still needs it.
	f.exec(`DELETE FROM patient WHERE id <= 30`)
	complExpect(t, f.run("keys", "retire", "1"), 4, "backup "+backupID)
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.data_keys WHERE key_id = 1`); n != 1 {
		t.Fatal("a refused retire removed the key")
	}
	complExpect(t, f.run("keys", "retire", "1", "--backups-destroyed-before", time.Now().Add(time.Minute).UTC().Format(time.RFC3339)), 0, "data key 1 retired")
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.data_keys WHERE key_id = 1`); n != 0 {
		t.Fatal("retire left the wrapped key")
	}
	complExpect(t, f.run("keys", "retire", "1"), 2, "no such data key")
	st = kbKeyStatus(t, f)
	if _, ok := st[1]; ok || st[2][0] != 20 {
		t.Errorf("after retire: %v", st)
	}
	f.verifyOK(10)

	// After cleanup the ciphertexts live under the column's own name; status
	// still finds them.
	lcCutOver(f)
	f.verifyOK(10)
	f.mustRun("cleanup", "--confirm", lcPlanID(f), "--purge", "vacuum-full")
	if st = kbKeyStatus(t, f); st[2][0] != 20 {
		t.Errorf("after cleanup: %v, want 20 ciphertexts under key 2", st)
	}
	complExpect(t, f.run("keys", "status"), 0, "public.patient.ssn: 10")

	var retired, refused bool
	for _, r := range complTableRecords(t, f) {
		if r.Command == "keys retire" && r.Event == audit.EventSuccess && r.Details["key_id"] == "1" {
			retired = true
		}
		if r.Command == "keys retire" && r.Event == audit.EventFailure {
			refused = true
		}
	}
	if !retired || !refused {
		t.Errorf("audit trail: retire recorded %v, refused retires recorded %v", retired, refused)
	}
}

// TestKeysRewrap moves the data keys to a new passphrase in one step: the
// old passphrase fails afterwards, the new one opens every value, and
// neither reaches any output.
func TestKeysRewrap(t *testing.T) {
	t.Parallel()
	f := kbFixture(t, 20)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	const newPass = "the-new-passphrase-CANARY-9c2"
	passFile := filepath.Join(f.dir, "new-pass")
	if err := os.WriteFile(passFile, []byte(newPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var outputs []result
	// Without a new KEK: a usage error.
	outputs = append(outputs, complExpectR(t, f.run("keys", "rewrap"), 2, "PGPHI_NEW_KEK"))
	old := f.env
	f.env = append(slicesClone(old), "PGPHI_NEW_KEK=passphrase", "PGPHI_NEW_PASSPHRASE_FILE="+passFile)
	outputs = append(outputs, complExpectR(t, f.run("keys", "rewrap"), 0, "1 data keys rewrapped from a passphrase KEK to a passphrase KEK"))
	f.env = old
	outputs = append(outputs, complExpectR(t, f.run("verify"), 2, "wrong passphrase"))
	f.env = []string{"PGPHI_PASSPHRASE_FILE=" + passFile}
	outputs = append(outputs, f.mustRun("keys", "list"))
	f.verifyOK(20)
	for _, r := range outputs {
		for _, s := range []string{newPass, testPassphrase} {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("a passphrase reached the output of %s", r)
			}
		}
	}
	var log bytes.Buffer
	for _, r := range complTableRecords(t, f) {
		b, _ := json.Marshal(r)
		log.Write(b)
	}
	if strings.Contains(log.String(), newPass) || !strings.Contains(log.String(), `"keys rewrap"`) {
		t.Error("the audit trail lacks the rewrap or holds the passphrase")
	}
}

// TestBackupVerified: a backup taken before cleanup holds no planted value
// in its bytes, restores into a temporary cluster and verifies (recorded,
// shown by check); a flipped byte anywhere, or a truncation, is caught.
func TestBackupVerified(t *testing.T) {
	t.Parallel()
	f := kbFixture(t, 50)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	file := filepath.Join(f.dir, "b.pgphi")
	r := complExpectR(t, f.run("backup", "--out", file), 0, "tink-aes256-gcm-hkdf-1mb")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("backup file mode %v, want 0600", fi.Mode().Perm())
	}
	// pg_dump would hold every first name in plaintext (cleanup has not run).
	if bytes.Contains(data, []byte(kbCanary)) || bytes.Contains(data, []byte("-12-3456")) {
		t.Fatal("the backup file holds a plaintext value")
	}
	complExpect(t, f.run("backup", "--out", file), 2, "never overwrites")

	v := complExpectR(t, f.run("backup", "verify", file), 0, "match the signed manifest", "values in", "verification recorded")
	t.Logf("backup: %s\nbackup verify: %s%s", r.stdout, v.stdout, v.stderr)
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.backups WHERE verified_at IS NOT NULL`); n != 1 {
		t.Errorf("%d verified backups recorded, want 1", n)
	}
	chk := f.run("check", "--json")
	if !strings.Contains(chk.stdout, `"id":"backup"`) || !strings.Contains(chk.stdout, "verified by restoring it") {
		t.Errorf("check does not show the verified backup:\n%s", chk)
	}
	for _, out := range []result{r, v, chk} {
		if strings.Contains(out.stdout+out.stderr, kbCanary) {
			t.Errorf("a planted value reached the output of %s", out)
		}
	}

	bad := func(name string, mutate func([]byte) []byte, fragments ...string) {
		t.Helper()
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, mutate(bytes.Clone(data)), 0o600); err != nil {
			t.Fatal(err)
		}
		res := f.run("backup", "verify", p)
		if res.code == 0 {
			t.Errorf("%s: backup verify accepted it", name)
			return
		}
		t.Logf("%s: %s", name, strings.TrimSpace(res.stderr))
		for _, s := range fragments {
			if !strings.Contains(res.stderr, s) {
				t.Errorf("%s: error does not say %q:\n%s", name, s, res)
			}
		}
	}
	bad("flip-body.pgphi", func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b }, "damaged")
	bad("flip-header.pgphi", func(b []byte) []byte { b[len("pgphi-backup-v1\n")+20] ^= 0x01; return b }, "damaged")
	bad("flip-last.pgphi", func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }, "damaged")
	bad("truncated.pgphi", func(b []byte) []byte { return b[:len(b)-100] }, "damaged")
	bad("empty.pgphi", func(b []byte) []byte { return nil }, "not a pgphi backup")
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.backups WHERE verified_at IS NOT NULL`); n != 1 {
		t.Errorf("a damaged file changed the record of verified backups (%d)", n)
	}
}

// TestKeysAndBackupsRefuseNonDBA: retire, rewrap, backup and their state are
// the dba's: other roles are refused and audited, and cannot reach the key
// tables, the usage counter or the backup records directly.
func TestKeysAndBackupsRefuseNonDBA(t *testing.T) {
	t.Parallel()
	f, a, _ := tpFixture(t, "environment: test\n")
	complExpect(t, f.run("apply"), 0)
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer, a.Outsider, a.AppWriter} {
		complExpect(t, tpAs(f, a, role, "keys", "retire", "1"), 4, "access denied")
		if !tpHasRefusal(t, f, "keys retire", role) {
			t.Errorf("the refused keys retire of %s is not audited", role)
		}
		complExpect(t, tpAs(f, a, role, "backup", "--out", filepath.Join(f.dir, role+".pgphi")), 4, "access denied")
	}
	if !tpHasRefusal(t, f, "backup", a.Outsider) {
		t.Error("the outsider's refused backup is not audited")
	}
	f.env = append(f.env, "PGPHI_NEW_KEK=passphrase", "PGPHI_NEW_PASSPHRASE=x-new-passphrase")
	complExpect(t, tpAs(f, a, a.HealthcareAdmin, "keys", "rewrap"), 4, "access denied")

	ctx := context.Background()
	attacks := map[string][]string{
		a.HealthcareAdmin: {
			`DELETE FROM pgphi.data_keys`,
			`UPDATE pgphi.data_keys SET wrapped = wrapped`,
			`UPDATE pgphi.kek SET iterations = iterations`,
			`UPDATE pgphi.key_usage SET encryptions = 0`,
			`INSERT INTO pgphi.backups VALUES (repeat('a', 32), now(), 'x', 'age', '', '{}', repeat('0', 64), now(), 'x', 0)`,
			`SELECT pgphi.backup_record(repeat('a', 32), 'age', '', '{}', repeat('0', 64))`,
			`SELECT pgphi.backup_verified(repeat('a', 32), repeat('0', 64), 0)`,
		},
		a.AppWriter: {
			`DELETE FROM pgphi.key_usage`,
			`SELECT pgphi.backup_verified(repeat('a', 32), repeat('0', 64), 0)`,
			`SELECT * FROM pgphi.data_keys`,
		},
		a.Outsider: {
			`DELETE FROM pgphi.data_keys`,
			`SELECT pgphi.backup_record(repeat('a', 32), 'age', '', '{}', repeat('0', 64))`,
		},
	}
	for role, stmts := range attacks {
		c := a.Connect(t, role)
		for _, s := range stmts {
			_, err := c.Exec(ctx, s)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Errorf("%s as %s: got %v, want permission denied (42501)", s, role, err)
			}
		}
	}
	// The counter is reachable by writers, but only upwards and in bounds.
	c := a.Connect(t, a.AppWriter)
	for _, s := range []string{`SELECT pgphi.key_usage_add(1, -5)`, `SELECT pgphi.key_usage_add(1, 0)`, `SELECT pgphi.key_usage_add(1, 4294967296)`} {
		_, err := c.Exec(ctx, s)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22023" {
			t.Errorf("%s: got %v, want an invalid-parameter error", s, err)
		}
	}
	_, err := c.Exec(ctx, `SELECT pgphi.key_usage_add(99, 1)`)
	if err == nil {
		t.Error("the counter accepted a key that does not exist")
	}
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM pgphi.data_keys`); n != 1 {
		t.Errorf("%d data keys after the attacks, want 1", n)
	}
	complExpect(t, tpAs(f, a, a.DBA, "keys", "status"), 0, "public.patient.ssn: 40")
	_ = pgtest.GroupDBA
}

func complExpectR(t testing.TB, r result, want int, fragments ...string) result {
	t.Helper()
	complExpect(t, r, want, fragments...)
	return r
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// TestKeyUsageLimit: check warns from 2^30 encryptions under the active
// key and fails at 2^32, where writers refuse to seal more under it; a
// rotation lets them go on.
func TestKeyUsageLimit(t *testing.T) {
	t.Parallel()
	f := kbFixture(t, 20)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	usage := func() (passed, required bool, evidence string) {
		t.Helper()
		r := f.run("check", "--json")
		var cl complChecklist
		if err := json.Unmarshal([]byte(r.stdout), &cl); err != nil {
			t.Fatalf("check --json: %v\n%s", err, r)
		}
		for _, c := range cl.Items {
			if c.ID == "key-usage" {
				return c.Passed, c.Required, c.Evidence
			}
		}
		t.Fatalf("check has no key-usage item:\n%s", r)
		return
	}
	if p, req, ev := usage(); !p || !req || !strings.Contains(ev, "data key 1 has made 40 encryptions") {
		t.Errorf("fresh key: passed %v required %v: %s", p, req, ev)
	}
	f.exec(`UPDATE pgphi.key_usage SET encryptions = 1073741824 WHERE key_id = 1`)
	if p, req, ev := usage(); p || req || !strings.Contains(ev, "rotate the key soon") {
		t.Errorf("at 2^30: passed %v required %v: %s; want a warning", p, req, ev)
	}
	f.exec(`UPDATE pgphi.key_usage SET encryptions = 4294967290 WHERE key_id = 1`)
	kbInsert(f, 21, 30)
	complExpect(t, f.run("apply"), 4, "limit of 2^32 encryptions", "data key 1")
	if n := queryInt(t, f.conn(), `SELECT count(*) FROM patient WHERE ssn_encrypted IS NULL`); n != 10 {
		t.Errorf("%d rows without a ciphertext after the refused apply, want the 10 new ones", n)
	}
	// The refused batch counted nothing; at 2^32 itself, check fails.
	f.exec(`UPDATE pgphi.key_usage SET encryptions = 4294967296 WHERE key_id = 1`)
	if p, req, ev := usage(); p || !req || !strings.Contains(ev, "the limit: rotate the key") {
		t.Errorf("at the limit: passed %v required %v: %s; want a failed requirement", p, req, ev)
	}
	f.mustRun("keys", "rotate")
	f.mustRun("apply")
	f.verifyOK(30)
	if p, _, ev := usage(); !p || !strings.Contains(ev, "data key 2") {
		t.Errorf("after rotate: passed %v: %s", p, ev)
	}
}

// TestBackupAge: the opt-in age format encrypts to the pinned recipients;
// verifying needs a matching identity; the YAML cannot change the
// recipients without pinning them.
func TestBackupAge(t *testing.T) {
	t.Parallel()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, "")
	key, _ := complKey(t, f.dir, "auditor")
	f.writeConfig(kbYAML("backup: { max_age: 12h, age_recipients: ["+id.Recipient().String()+"] }\n", key))
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, ssn text)`)
	kbInsert(f, 1, 20)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	file := filepath.Join(f.dir, "b.age.pgphi")
	complExpect(t, f.run("backup", "--out", file, "--format", "age"), 0, "format age")
	data, _ := os.ReadFile(file)
	if bytes.Contains(data, []byte(kbCanary)) {
		t.Fatal("the age backup holds a plaintext value")
	}
	complExpect(t, f.run("backup", "verify", file), 2, "no age identity")
	other, _ := age.GenerateX25519Identity()
	otherPath := filepath.Join(f.dir, "other.key")
	writeFile(t, otherPath, other.String()+"\n")
	os.Chmod(otherPath, 0o600)
	complExpect(t, f.run("backup", "verify", file, "--identity", otherPath), 2, "none of the given age identities")
	idPath := filepath.Join(f.dir, "id.key")
	writeFile(t, idPath, id.String()+"\n")
	os.Chmod(idPath, 0o600)
	complExpect(t, f.run("backup", "verify", file, "--identity", idPath), 0, "(age, taken", "match the signed manifest")
	chk := f.run("check", "--json")
	if !strings.Contains(chk.stdout, "(age)") || !strings.Contains(chk.stdout, "12h0m0s") {
		t.Errorf("check does not show the age backup under the pinned 12h:\n%s", chk)
	}
	f.writeConfig(kbYAML("backup: { age_recipients: ["+other.Recipient().String()+"] }\n", key))
	complExpect(t, f.run("backup", "--out", filepath.Join(f.dir, "x.pgphi"), "--format", "age"), 4, "backup.age_recipients")
}

// TestBackupRequiredInProduction: in production, check requires a backup
// verified by restoring it within the pinned backup.max_age.
func TestBackupRequiredInProduction(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "")
	key, _ := complKey(t, f.dir, "auditor")
	alice, alicePub := complKey(t, f.dir, "alice")
	complWriteSigners(t, filepath.Join(f.dir, "allowed_signers"), complSigner{"alice", "dba", alicePub, ""})
	f.writeConfig(strings.Replace(kbYAML("access: { allow_superuser: true }\napprovals: { signers: allowed_signers, require: { production: { dba: 1 } } }\nbackup: { max_age: 2h }\n", key),
		"environment: test", "environment: production", 1))
	f.exec(`CREATE TABLE patient (id int PRIMARY KEY, first_name text, ssn text)`)
	kbInsert(f, 1, 10)
	f.mustRun("keys", "init")
	item := func() (bool, bool, string) {
		t.Helper()
		r := f.run("check", "--json")
		var cl complChecklist
		if err := json.Unmarshal([]byte(r.stdout), &cl); err != nil {
			t.Fatalf("check --json: %v\n%s", err, r)
		}
		for _, c := range cl.Items {
			if c.ID == "backup" {
				return c.Passed, c.Required, c.Evidence
			}
		}
		t.Fatalf("no backup item:\n%s", r)
		return false, false, ""
	}
	if p, req, ev := item(); p || !req || !strings.Contains(ev, "no backup was ever verified") {
		t.Fatalf("before any backup: passed %v required %v: %s", p, req, ev)
	}
	complExpect(t, f.run("approve", complPlanID(f), "--command", "apply", "--key", alice), 0)
	complExpect(t, f.run("apply"), 4, "apply in production needs a backup verified by restoring it within the pinned maximum age 2h0m0s")
	complAssertRefused(t, f, "apply", "backup")
	file := filepath.Join(f.dir, "b.pgphi")
	f.mustRun("backup", "--out", file)
	if p, _, _ := item(); p {
		t.Fatal("an unverified backup satisfied check")
	}
	f.mustRun("backup", "verify", file)
	if p, req, ev := item(); !p || !req || !strings.Contains(ev, "2h0m0s") {
		t.Fatalf("after a verified backup: passed %v required %v: %s", p, req, ev)
	}
	f.mustRun("apply")
	// Older than the pinned maximum age.
	f.exec(`ALTER TABLE pgphi.backups DISABLE TRIGGER ALL; UPDATE pgphi.backups SET taken_at = taken_at - interval '3 hours'`)
	if p, _, ev := item(); p || !strings.Contains(ev, "older than the pinned maximum age 2h0m0s") {
		t.Fatalf("a 3-hour-old backup under a 2h maximum: passed %v: %s", p, ev)
	}
	rep := f.run("report")
	if !strings.Contains(rep.stdout, "## Backups") || !strings.Contains(rep.stdout, "tink-aes256-gcm-hkdf-1mb") {
		t.Errorf("the report does not show the backup:\n%s", rep)
	}
}

// kbRecordVerifiedBackup records, as the superuser, a backup verified now,
// for tests of production's other gates (the backup gate has its own tests:
// TestBackupRequiredInProduction).
func kbRecordVerifiedBackup(f *fixture) {
	f.t.Helper()
	f.exec(`INSERT INTO pgphi.backups (backup_id, taken_at, recorded_by, format, plan_id, key_ids, manifest_sha256, verified_at, verified_by, verified_rows)
		VALUES (md5(random()::text), now(), 'test', 'tink-aes256-gcm-hkdf-1mb', '', '{}', repeat('0', 64), now(), 'test', 0)`)
}
