package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The end of a migration through the binary: the cutover flags, cleanup
// (drop and purge the plaintext) and rollback (before and after cleanup),
// each interrupted, refused or raced by the application the way it happens
// in production.

// lcProtected are the protected columns of the lifecycle tests' patient table.
var lcProtected = []string{"last_name", "notes", "dob", "info"}

// The configs turn the adaptive throttle off: it follows a canary query that
// the other tests running in parallel slow down, and it is not under test
// here. Apply runs at full speed, the worst case for application writes.
const lcKillConfig = `version: 1
environment: test
apply: { batch_size: 500, chunk_rows: 5000, adaptive: false }
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact, prefix] }
      notes: { class: phi }
      dob: { class: pii }
      info: { class: phi }
`

// lcCreatePatient creates the lifecycle tests' patient table with rows rows:
// protected varchar, text, date and jsonb columns with NULLs and empty
// strings, and an unprotected ward.
func lcCreatePatient(f *fixture, rows int) {
	f.t.Helper()
	f.exec(`CREATE TABLE patient (
		id bigint PRIMARY KEY,
		last_name varchar(60),
		notes text,
		dob date,
		info jsonb,
		ward int NOT NULL DEFAULT 1)`)
	f.exec(`INSERT INTO patient
		SELECT g,
		       CASE WHEN g % 11 = 0 THEN NULL WHEN g % 13 = 0 THEN '' ELSE 'Last' || (g % 997) END,
		       CASE WHEN g % 7 = 0 THEN NULL WHEN g % 17 = 0 THEN '' ELSE repeat('note ' || g || ' ünï ', 1 + g % 5) END,
		       CASE WHEN g % 9 = 0 THEN NULL ELSE date '1930-01-01' + (g % 30000) END,
		       CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('pulse', 60 + g % 40, 'tags', jsonb_build_array('a', g, NULL)) END,
		       g % 30
		FROM generate_series(1, $1::int) g`, rows)
	f.exec(`ANALYZE patient`)
}

// lcDigest is an md5 of every row of patient, every column, in key order.
func lcDigest(t testing.TB, c *pgx.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var d string
	if err := c.QueryRow(ctx, `SELECT md5(string_agg(ROW(id, last_name, notes, dob, info, ward)::text, E'\n' ORDER BY id)) FROM patient`).Scan(&d); err != nil {
		t.Fatalf("digest of patient: %v", err)
	}
	return d
}

// lcColumns lists a table's columns with type, NOT NULL and default, by name
// (columns restored after cleanup come last, so their position differs).
func lcColumns(t testing.TB, c *pgx.Conn, table string) string {
	t.Helper()
	return lcQueryLines(t, c, `SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull || ' default=' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attname`, table)
}

// lcCatalog describes a table the way a DBA compares it: columns in order
// with types, NOT NULL, defaults and comments; constraints; indexes;
// triggers.
func lcCatalog(t testing.TB, c *pgx.Conn, table string) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
		        || ' default=' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '') || ' comment=' || COALESCE(col_description(a.attrelid, a.attnum), '')
		 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		 WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
		`SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass ORDER BY conname`,
		`SELECT pg_get_indexdef(indexrelid) || ' valid=' || indisvalid FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1`,
		`SELECT tgname || ' ' || pg_get_triggerdef(oid) || ' enabled=' || tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname`,
	} {
		b.WriteString(lcQueryLines(t, c, q, table))
		b.WriteString("--\n")
	}
	return b.String()
}

// lcQueryLines runs a query of one text column and returns its rows, one a line.
func lcQueryLines(t testing.TB, c *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("%s: %v", firstLine(sql), err)
		}
		b.WriteString(s + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	return b.String()
}

// lcIDs runs a query returning ids and renders them sorted, one a line.
func lcIDs(t testing.TB, c *pgx.Conn, sql string, args ...any) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(lcQueryLines(t, c, sql, args...)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return lcSortIDs(out)
}

func lcSortIDs(ids []string) []string {
	sort.Slice(ids, func(i, j int) bool {
		a, _ := strconv.ParseInt(ids[i], 10, 64)
		b, _ := strconv.ParseInt(ids[j], 10, 64)
		return a < b
	})
	return ids
}

// lcPlanID is the current plan id, from `pgphi plan --json`.
func lcPlanID(f *fixture) string {
	f.t.Helper()
	r := f.mustRun("plan", "--json")
	var p struct {
		PlanID string `json:"plan_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || !strings.HasPrefix(p.PlanID, "plan-") {
		f.t.Fatalf("plan --json gives no plan id (%v):\n%s", err, r.stdout)
	}
	return p.PlanID
}

// lcFlags parses the output of `pgphi flags` into name -> on.
func lcFlags(t testing.TB, out string) map[string]bool {
	t.Helper()
	flags := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 2 || (fs[1] != "on" && fs[1] != "off") {
			t.Fatalf("pgphi flags: unexpected line %q in:\n%s", l, out)
		}
		flags[fs[0]] = fs[1] == "on"
	}
	return flags
}

// lcCutOver is what the operator does once applications read and write
// ciphertext: both cutover flags on.
func lcCutOver(f *fixture) {
	f.t.Helper()
	f.mustRun("flags", "set", "use_encrypted_search", "on")
	f.mustRun("flags", "set", "require_encryption", "on")
}

// lcResult is one pgphi run that may have been killed.
type lcResult struct {
	args    []string
	killed  bool
	code    int
	stdout  string
	stderr  string
	elapsed time.Duration
}

// lcKill says when to SIGKILL a run: delay after the first stderr line
// containing match, or after the start when match is "".
type lcKill struct {
	match string
	delay time.Duration
}

func (k lcKill) String() string {
	if k.match == "" {
		return fmt.Sprintf("%s after start", k.delay)
	}
	return fmt.Sprintf("%s after %q", k.delay, k.match)
}

// lcStart starts pgphi with args in the background. onLine, if not nil, sees
// every stderr line as it is printed. kill sends SIGKILL; wait waits for the
// process and returns its result.
func lcStart(t *testing.T, f *fixture, onLine func(string), args ...string) (kill func(), exited <-chan struct{}, wait func() lcResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	all := append(f.globals(), args...)
	cmd := exec.CommandContext(ctx, pgphiBin, all...)
	cmd.Env = append(cleanEnv(), f.env...)
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout = &out
	pipe, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting pgphi %s: %v", shortArgs(all), err)
	}
	var mu sync.Mutex
	var errb strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			mu.Lock()
			errb.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if onLine != nil {
				onLine(sc.Text())
			}
		}
	}()
	kill = func() { _ = cmd.Process.Signal(syscall.SIGKILL) }
	wait = func() lcResult {
		t.Helper()
		defer cancel()
		<-readDone
		err := cmd.Wait()
		mu.Lock()
		res := lcResult{args: args, stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
		mu.Unlock()
		if ctx.Err() != nil {
			t.Fatalf("pgphi %s did not finish within %v:\nstdout:\n%s\nstderr:\n%s", shortArgs(args), commandTimeout, res.stdout, res.stderr)
		}
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				res.killed = true
				res.code = -1
			} else {
				res.code = ee.ExitCode()
			}
		default:
			t.Fatalf("pgphi %s: %v", shortArgs(args), err)
		}
		assertNoStackTrace(t, args, res.stderr)
		assertNoStackTrace(t, args, res.stdout)
		return res
	}
	return kill, readDone, wait
}

// lcRunKilled runs pgphi with args and SIGKILLs it as k says, unless it
// exits first.
func lcRunKilled(t *testing.T, f *fixture, k lcKill, args ...string) lcResult {
	t.Helper()
	trigger := make(chan struct{})
	var once sync.Once
	fire := func() { once.Do(func() { close(trigger) }) }
	kill, exited, wait := lcStart(t, f, func(line string) {
		if k.match != "" && strings.Contains(line, k.match) {
			fire()
		}
	}, args...)
	if k.match == "" {
		fire()
	}
	select {
	case <-trigger:
		select {
		case <-time.After(k.delay):
			kill()
		case <-exited:
		}
	case <-exited:
	}
	return wait()
}

// lcLastLine is the last non-empty line of s, shortened for logs.
func lcLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 70 {
		l = l[:70] + "..."
	}
	return l
}

// lcCleanupState reads, in one snapshot, what cleanup drops and records.
type lcCleanupState struct {
	plain, encrypted    int64 // protected columns with their plaintext / ciphertext column present
	marker, trigger, fn bool
	cleaned, purged     int64 // state rows of protected columns
	migrationComplete   bool
}

func (s lcCleanupState) String() string {
	return fmt.Sprintf("plaintext columns %d, ciphertext columns %d, marker %v, trigger %v, mark function %v, cleaned %d, purged %d, migration_complete %v",
		s.plain, s.encrypted, s.marker, s.trigger, s.fn, s.cleaned, s.purged, s.migrationComplete)
}

func lcReadCleanupState(t testing.TB, c *pgx.Conn) lcCleanupState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var enc []string
	for _, col := range lcProtected {
		enc = append(enc, col+"_encrypted")
	}
	var s lcCleanupState
	err := c.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname = ANY($1) AND NOT attisdropped),
		(SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname = ANY($2) AND NOT attisdropped),
		EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'public.patient'::regclass AND attname = 'pgphi_pending' AND NOT attisdropped),
		EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'public.patient'::regclass AND tgname = 'zz_pgphi_mark'),
		EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgphi' AND p.proname LIKE 'mark\_%'),
		(SELECT count(*) FROM pgphi.protected_columns WHERE phase = 'cleaned'),
		(SELECT count(*) FROM pgphi.protected_columns WHERE purged_at IS NOT NULL),
		pgphi.flag('migration_complete')`, lcProtected, enc).Scan(
		&s.plain, &s.encrypted, &s.marker, &s.trigger, &s.fn, &s.cleaned, &s.purged, &s.migrationComplete)
	if err != nil {
		t.Fatalf("reading cleanup state: %v", err)
	}
	return s
}

// TestCleanupAndRollbackSurviveSIGKILL kills `pgphi cleanup` and then
// `pgphi rollback` at several points, each run resuming the previous one's
// work: the table is never half cleaned, the cleaned table still verifies,
// searches and reports, and the final rollback gives back every value and
// column type of the original table.
func TestCleanupAndRollbackSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	const rows = 30000
	f := newFixture(t, lcKillConfig)
	lcCreatePatient(f, rows)
	c := f.conn()
	columnsBefore := lcColumns(t, c, "patient")
	digest := lcDigest(t, c)
	f.exec(`CREATE TABLE patient_before AS SELECT * FROM patient`) // for diagnostics
	wantExact := lcIDs(t, c, `SELECT id::text FROM patient WHERE last_name = 'Last42'`)
	wantPrefix := lcIDs(t, c, `SELECT id::text FROM patient WHERE last_name LIKE 'Last99%'`)
	nulls := map[string]int64{}
	for _, col := range lcProtected {
		nulls[col] = queryInt(t, c, fmt.Sprintf(`SELECT count(*) FROM patient WHERE %s IS NULL`, col))
	}
	if len(wantExact) == 0 || len(wantPrefix) == 0 || nulls["last_name"] == 0 {
		t.Fatal("test setup: no rows to search for, or no NULLs")
	}

	f.mustRun("keys", "init")
	f.mustRun("apply")
	planID := lcPlanID(f)
	lcCutOver(f)
	f.verifyOK(rows)
	if st := lcReadCleanupState(t, c); st.plain != 4 || !st.trigger {
		t.Fatalf("before cleanup: %s", st)
	}

	// Cleanup, killed at several points. Between runs the table is either
	// untouched or completely cleaned: the drop is one transaction. The
	// kill points follow the state: first during start-up, then right
	// after cleanup announces the drop (until a run gets the drop
	// committed), then during the purge (until a run finishes it).
	cleanupArgs := []string{"cleanup", "--confirm", planID, "--purge", "vacuum-full"}
	startKills := []lcKill{{"", 0}, {"", 100 * time.Millisecond}}
	ms := func(ds ...int) []time.Duration {
		var out []time.Duration
		for _, d := range ds {
			out = append(out, time.Duration(d)*time.Millisecond)
		}
		return out
	}
	dropDelays := ms(0, 5, 20, 60, 150, 400, 1000)
	purgeDelays := ms(0, 20, 60, 150, 400)
	killedRuns, killedBeforeDrop, killedInPurge := 0, 0, 0
	st := lcReadCleanupState(t, c)
	for {
		untouched := st.cleaned == 0
		var k lcKill
		switch {
		case len(startKills) > 0:
			k, startKills = startKills[0], startKills[1:]
		case untouched && len(dropDelays) > 0:
			k, dropDelays = lcKill{"==> cleanup", dropDelays[0]}, dropDelays[1:]
		case !untouched && st.purged == 0 && len(purgeDelays) > 0:
			k, purgeDelays = lcKill{"purge", purgeDelays[0]}, purgeDelays[1:]
		default:
			k.match = "done" // the cleanup is done, or every kill point was tried
		}
		if k.match == "done" {
			break
		}
		r := lcRunKilled(t, f, k, cleanupArgs...)
		if !r.killed && r.code != 0 {
			t.Fatalf("cleanup (kill %s) exited %d on its own:\nstdout:\n%s\nstderr:\n%s", k, r.code, r.stdout, r.stderr)
		}
		prev := st
		st = lcReadCleanupState(t, c)
		t.Logf("cleanup killed %s: killed=%v after %s, last line %q; %s", k, r.killed, r.elapsed.Round(time.Millisecond), lcLastLine(r.stderr), st)
		untouched = st.plain == 4 && st.encrypted == 4 && st.marker && st.trigger && st.fn && st.cleaned == 0 && st.purged == 0
		cleaned := st.plain == 0 && st.encrypted == 4 && !st.marker && !st.trigger && !st.fn && st.cleaned == 4 && (st.purged == 0 || st.purged == 4)
		if !untouched && !cleaned {
			t.Fatalf("after a cleanup killed %s the table is half cleaned: %s", k, st)
		}
		if st.migrationComplete && (!cleaned || st.purged != 4) {
			t.Fatalf("migration_complete is on before the purge finished: %s", st)
		}
		if r.killed {
			killedRuns++
			switch {
			case k.match == "==> cleanup" && untouched:
				killedBeforeDrop++
			case k.match == "purge" && prev.cleaned == 4 && st.purged == 0:
				killedInPurge++
			}
		}
	}
	t.Logf("cleanup: %d runs killed, %d of them after announcing the drop and before it committed, %d during the purge", killedRuns, killedBeforeDrop, killedInPurge)
	if killedRuns == 0 {
		t.Fatal("no cleanup run was killed: cleanup is too fast for this test's kill points")
	}
	if killedBeforeDrop == 0 || killedInPurge == 0 {
		t.Log("note: on this machine no kill landed in the drop transaction or in the purge")
	}
	r := f.mustRun(cleanupArgs...)
	if !strings.Contains(r.stdout, "cleaned up "+planID) || !strings.Contains(r.stdout, "WAL") || !strings.Contains(r.stdout, "backups") {
		t.Errorf("cleanup output does not confirm the cleanup and list where plaintext may remain:\n%s", r.stdout)
	}
	st = lcReadCleanupState(t, c)
	if st.plain != 0 || st.encrypted != 4 || st.marker || st.trigger || st.fn || st.cleaned != 4 || st.purged != 4 || !st.migrationComplete {
		t.Fatalf("after cleanup: %s", st)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM patient`); n != rows {
		t.Fatalf("patient has %d rows after cleanup, want %d", n, rows)
	}
	for _, col := range lcProtected {
		if n := queryInt(t, c, fmt.Sprintf(`SELECT count(*) FROM patient WHERE %s_encrypted IS NULL`, col)); n != nulls[col] {
			t.Errorf("%s_encrypted: %d NULL ciphertexts after cleanup, want %d (the NULL plaintexts)", col, n, nulls[col])
		}
	}
	// The search index survives cleanup.
	if n := queryInt(t, c, `SELECT count(*) FROM patient WHERE last_name_bidx IS NULL AND last_name_encrypted IS NOT NULL`); n != 0 {
		t.Errorf("%d ciphertexts without blind index terms after cleanup", n)
	}
	// Cleanup again: a no-op success.
	f.mustRun(cleanupArgs...)

	// The cleaned table verifies, searches and reports from pgphi's state.
	f.verifyOK(rows)
	if got := lcSortIDs(strings.Fields(f.mustRun("search", "patient", "last_name", "--exact", "Last42", "--reason", "lifecycle test").stdout)); !slices.Equal(got, wantExact) {
		t.Errorf("search --exact after cleanup: got %v, want %v", got, wantExact)
	}
	if got := lcSortIDs(strings.Fields(f.mustRun("search", "patient", "last_name", "--prefix", "Last99", "--reason", "lifecycle test").stdout)); !slices.Equal(got, wantPrefix) {
		t.Errorf("search --prefix after cleanup: got %d keys, want %d", len(got), len(wantPrefix))
	}
	status := f.status()
	f.assertFullyEncrypted(status)
	if status.PlanID != planID {
		t.Errorf("status after cleanup names plan %s, want %s", status.PlanID, planID)
	}
	for _, cs := range status.Columns {
		if cs.Total != rows || cs.Null != nulls[cs.Column] || cs.Encrypted != rows-nulls[cs.Column] {
			t.Errorf("status %s after cleanup: total %d, encrypted %d, null %d; want %d, %d, %d",
				cs.Column, cs.Total, cs.Encrypted, cs.Null, rows, rows-nulls[cs.Column], nulls[cs.Column])
		}
	}
	if lcPlanID(f) != planID {
		t.Error("the plan id changed with cleanup")
	}

	// Rollback, killed at several points: the restore resumes, never redoes
	// or loses a row.
	const anyValue = `last_name%[1]s IS NOT NULL OR notes%[1]s IS NOT NULL OR dob%[1]s IS NOT NULL OR info%[1]s IS NOT NULL`
	toRestore := queryInt(t, c, `SELECT count(*) FROM patient WHERE `+fmt.Sprintf(anyValue, "_encrypted"))
	restored := func() int64 {
		if lcReadCleanupState(t, c).plain != 4 {
			return -1
		}
		return queryInt(t, c, `SELECT count(*) FROM patient WHERE `+fmt.Sprintf(anyValue, ""))
	}
	killedRuns = 0
	midRestore := false
	for _, k := range []lcKill{
		{"", 100 * time.Millisecond},
		{"==> rollback", 0},
		{"==> rollback", 20 * time.Millisecond},
		{"==> rollback", 150 * time.Millisecond},
		{"==> rollback", 400 * time.Millisecond},
		{"==> rollback", 800 * time.Millisecond},
		{"rows restored", 0},
		{"", 1500 * time.Millisecond},
	} {
		r := lcRunKilled(t, f, k, "rollback")
		if !r.killed && r.code != 0 {
			t.Fatalf("rollback (kill %s) exited %d on its own:\nstdout:\n%s\nstderr:\n%s", k, r.code, r.stdout, r.stderr)
		}
		if r.killed {
			killedRuns++
		}
		st := lcReadCleanupState(t, c)
		n := restored()
		t.Logf("rollback killed %s: killed=%v after %s, last line %q; rows with plaintext so far %d; %s", k, r.killed, r.elapsed.Round(time.Millisecond), lcLastLine(r.stderr), n, st)
		if st.plain != 0 && st.plain != 4 {
			t.Fatalf("after a rollback killed %s, %d of 4 plaintext columns exist", k, st.plain)
		}
		if st.encrypted != 0 && st.encrypted != 4 {
			t.Fatalf("after a rollback killed %s, %d of 4 ciphertext columns exist", k, st.encrypted)
		}
		if st.encrypted == 0 && st.plain != 4 {
			t.Fatalf("after a rollback killed %s the ciphertext is gone but the plaintext is not back: %s", k, st)
		}
		if n > 0 && n < toRestore {
			midRestore = true
		}
	}
	if killedRuns == 0 {
		t.Fatal("no rollback run was killed: rollback is too fast for this test's kill points")
	}
	if !midRestore {
		t.Log("note: no kill landed in the middle of the restore on this machine")
	}
	f.mustRun("rollback")

	if got := lcColumns(t, c, "patient"); got != columnsBefore {
		t.Errorf("columns after rollback differ from the original:\nbefore:\n%s\nafter:\n%s", columnsBefore, got)
	}
	if got := lcDigest(t, c); got != digest {
		t.Errorf("data after rollback differs from the original (md5 %s, want %s)", got, digest)
		logQuery(t, c, `SELECT b.id, p.id, b.last_name, p.last_name, left(b.notes, 20), left(p.notes, 20), b.dob, p.dob, b.info, p.info, b.ward, p.ward
			FROM patient_before b FULL JOIN patient p ON p.id = b.id
			WHERE ROW(b.id, b.last_name, b.notes, b.dob, b.info, b.ward)::text IS DISTINCT FROM ROW(p.id, p.last_name, p.notes, p.dob, p.info, p.ward)::text
			ORDER BY COALESCE(b.id, p.id) LIMIT 5`)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM patient`); n != rows {
		t.Errorf("patient has %d rows after rollback, want %d", n, rows)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'patient'::regclass AND attnum > 0 AND NOT attisdropped
		AND (attname LIKE '%\_encrypted' OR attname LIKE '%\_bidx' OR attname LIKE 'pgphi%')`); n != 0 {
		t.Errorf("%d pgphi columns left on patient after rollback", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'patient'::regclass AND NOT tgisinternal`); n != 0 {
		t.Errorf("%d triggers left on patient after rollback", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pg_index WHERE indrelid = 'patient'::regclass AND NOT indisprimary`); n != 0 {
		t.Errorf("%d pgphi indexes left on patient after rollback", n)
	}
	if n := queryInt(t, c, `SELECT (SELECT count(*) FROM pgphi.protected_columns) + (SELECT count(*) FROM pgphi.chunks) + (SELECT count(*) FROM pgphi.blind_indexes)`); n != 0 {
		t.Errorf("%d rows of pgphi state left for the table after rollback", n)
	}
	if flags := lcFlags(t, f.mustRun("flags").stdout); flags["use_encrypted_search"] || flags["require_encryption"] || flags["migration_complete"] {
		t.Errorf("flags after rollback: %v, want all off", flags)
	}
	// Rollback again: nothing to do.
	f.mustRun("rollback")
	if got := lcDigest(t, c); got != digest {
		t.Error("a second rollback changed the data")
	}
}

const lcCatalogDDL = `
CREATE TABLE ward (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO ward SELECT g, 'ward ' || g FROM generate_series(1, 10) g;
CREATE TABLE patient (
  uid varchar(36) PRIMARY KEY,
  mrn text NOT NULL UNIQUE,
  first_name text DEFAULT 'unknown' CHECK (first_name <> 'forbidden'),
  last_name varchar(80) NOT NULL DEFAULT '',
  dob date,
  notes text,
  vitals jsonb DEFAULT '{}'::jsonb,
  ward_id int REFERENCES ward (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT dob_sane CHECK (dob > date '1900-01-01')
);
COMMENT ON COLUMN patient.notes IS 'free text from the ward';
CREATE INDEX patient_last_name_idx ON patient (last_name);
CREATE INDEX patient_lower_first_idx ON patient (lower(first_name)) WHERE dob IS NOT NULL;
CREATE FUNCTION app_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at := COALESCE(NEW.created_at, now()); RETURN NEW; END $$;
CREATE TRIGGER app_touch BEFORE INSERT OR UPDATE ON patient FOR EACH ROW EXECUTE FUNCTION app_touch();
INSERT INTO patient (uid, mrn, first_name, last_name, dob, notes, vitals, ward_id, created_at)
SELECT 'u' || lpad(g::text, 5, '0'), 'MRN' || g,
  CASE WHEN g % 9 = 0 THEN NULL ELSE 'first' || g END,
  CASE WHEN g % 3 = 0 THEN 'Smith' ELSE 'last' || g END,
  CASE WHEN g % 4 = 0 THEN NULL ELSE date '1950-01-01' + g END,
  CASE WHEN g % 6 = 0 THEN '' ELSE 'note ' || g END,
  CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('pulse', 60 + g % 40) END,
  1 + g % 10,
  timestamptz '2024-01-01' + g * interval '1 minute'
FROM generate_series(1, 3000) g;`

const lcCatalogConfig = `version: 1
environment: test
apply: { batch_size: 250, adaptive: false }
tables:
  patient:
    columns:
      first_name: { class: pii, search: [exact, prefix] }
      last_name:  { class: pii, search: [exact] }
      dob:        { class: pii, search: [date] }
      notes:      { class: phi }
      vitals:     { class: phi }
`

func lcCatalogDigest(t testing.TB, c *pgx.Conn) string {
	t.Helper()
	var d string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.QueryRow(ctx, `SELECT md5(string_agg(ROW(uid, mrn, first_name, last_name, dob, notes, vitals, ward_id, created_at)::text, E'\n' ORDER BY uid)) FROM patient`).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRollbackBeforeCleanupCLI applies and rolls back through the binary:
// the table's catalog (columns, types, defaults, comments, constraints,
// indexes, triggers) and data are exactly as before apply, pgphi's state for
// it is gone, a second rollback is harmless, and apply works again.
func TestRollbackBeforeCleanupCLI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, lcCatalogConfig)
	f.exec(lcCatalogDDL)
	c := f.conn()
	before, digest := lcCatalog(t, c, "patient"), lcCatalogDigest(t, c)
	f.mustRun("keys", "init")
	f.mustRun("apply")
	if lcCatalog(t, c, "patient") == before {
		t.Fatal("apply changed nothing in the catalog?")
	}
	// The application kept writing during the migration (and rollback
	// keeps what it wrote); the flags were being turned on.
	f.exec(`UPDATE patient SET notes = 'changed after apply' WHERE uid = 'u00007'`)
	f.exec(`INSERT INTO patient (uid, mrn, first_name, last_name, notes, ward_id) VALUES ('u99999', 'MRN99999', 'Late', 'Comer', NULL, 3)`)
	f.mustRun("flags", "set", "use_encrypted_search", "on")
	digest2 := lcCatalogDigest(t, c)
	if digest2 == digest {
		t.Fatal("test setup: the application writes changed nothing")
	}

	r := f.mustRun("rollback")
	if !strings.Contains(r.stdout, "rolled back") {
		t.Errorf("rollback output: %s", r.stdout)
	}
	if after := lcCatalog(t, c, "patient"); after != before {
		t.Fatalf("catalog differs after rollback:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := lcCatalogDigest(t, c); got != digest2 {
		t.Fatal("data differs after rollback from what the application last wrote")
	}
	if n := queryInt(t, c, `SELECT (SELECT count(*) FROM pgphi.protected_columns) + (SELECT count(*) FROM pgphi.chunks)
		+ (SELECT count(*) FROM pgphi.plan_tables) + (SELECT count(*) FROM pgphi.blind_indexes) + (SELECT count(*) FROM pgphi.failures)
		+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgphi' AND p.proname LIKE 'mark\_%')`); n != 0 {
		t.Errorf("%d pgphi state rows or functions left for the table after rollback", n)
	}
	if flags := lcFlags(t, f.mustRun("flags").stdout); flags["use_encrypted_search"] {
		t.Errorf("flag use_encrypted_search still on after rollback: %v", flags)
	}
	// The application's own trigger still works (pgphi's is gone).
	f.exec(`INSERT INTO patient (uid, mrn, last_name, created_at) VALUES ('u99998', 'MRN99998', 'x', NULL)`)
	if n := queryInt(t, c, `SELECT count(*) FROM patient WHERE uid = 'u99998' AND created_at IS NOT NULL`); n != 1 {
		t.Error("the application trigger no longer fires after rollback")
	}
	f.exec(`DELETE FROM patient WHERE uid = 'u99998'`)

	// Twice is fine.
	f.mustRun("rollback")
	if after := lcCatalog(t, c, "patient"); after != before {
		t.Fatalf("catalog differs after a second rollback:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := lcCatalogDigest(t, c); got != digest2 {
		t.Fatal("a second rollback changed the data")
	}

	// And the migration can start over.
	f.mustRun("apply")
	f.verifyOK(3001)
	f.assertFullyEncrypted(f.status())
}

const lcSmallConfig = `version: 1
environment: test
apply: { batch_size: 100, adaptive: false }
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact] }
      notes: { class: phi }
      dob: { class: pii }
      info: { class: phi }
`

// TestCleanupRefusals checks every reason cleanup refuses (exit 4, saying
// why, changing nothing), then that it succeeds after a fresh verification.
func TestCleanupRefusals(t *testing.T) {
	t.Parallel()
	const rows = 500
	f := newFixture(t, lcSmallConfig)
	lcCreatePatient(f, rows)
	c := f.conn()
	columnsBefore := lcColumns(t, c, "patient")
	f.mustRun("keys", "init")
	f.mustRun("apply")
	planID := lcPlanID(f)

	refused := func(why string, want []string, args ...string) {
		t.Helper()
		r := f.expectCode(4, args...)
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("cleanup refused (%s) without saying %q:\n%s", why, w, r.stderr)
			}
		}
		if st := lcReadCleanupState(t, c); st.plain != 4 || !st.trigger || !st.marker || st.cleaned != 0 {
			t.Fatalf("a refused cleanup (%s) changed the table: %s", why, st)
		}
	}
	// Usage errors first.
	if r := f.expectCode(2, "cleanup"); !strings.Contains(r.stderr, "--confirm") {
		t.Errorf("cleanup without --confirm does not ask for it:\n%s", r.stderr)
	}
	f.expectCode(2, "cleanup", "--confirm", planID, "--purge", "shred")

	refused("wrong plan id", []string{"plan-00000000000000000000", "not the current plan", planID},
		"cleanup", "--confirm", "plan-00000000000000000000")
	refused("flags off", []string{"use_encrypted_search", "is off"}, "cleanup", "--confirm", planID)
	f.mustRun("flags", "set", "use_encrypted_search", "on")
	refused("require_encryption off", []string{"require_encryption", "is off"}, "cleanup", "--confirm", planID)
	f.mustRun("flags", "set", "require_encryption", "on")
	// Cleanup verifies every value itself: no recorded verification is
	// needed, and none is trusted.
	// A value that does not verify refuses, whatever was recorded before.
	var ct []byte
	ctx := context.Background()
	if err := c.QueryRow(ctx, `SELECT notes_encrypted FROM patient WHERE id = 1`).Scan(&ct); err != nil || ct == nil {
		t.Fatalf("reading a ciphertext: %v", err)
	}
	f.exec(`UPDATE patient SET notes_encrypted = (SELECT notes_encrypted FROM patient WHERE id = 2) WHERE id = 1`)
	if r := f.run("verify"); r.code != 1 || !strings.Contains(r.stdout, "MISMATCH") {
		t.Fatalf("verify of a swapped ciphertext: want exit 1 and a MISMATCH, got %s", r)
	}
	refused("failed verification", []string{"verification before cleanup failed", "public.patient.notes at (id)=(1)"}, "cleanup", "--confirm", planID, "--vacuum-full")
	f.exec(`UPDATE patient SET notes_encrypted = $1 WHERE id = 1`, ct)
	f.verifyOK(rows)

	// A wrong ciphertext written after the verification is found when
	// cleanup re-verifies, under its lock, the rows written since; the
	// refusal names the row and the column.
	f.exec(`UPDATE patient SET ward = ward + 1 WHERE id = 3`)
	f.exec(`UPDATE patient SET notes_encrypted = (SELECT notes_encrypted FROM patient WHERE id = 2) WHERE id = 1`)
	refused("wrong ciphertext written since verification", []string{"do not verify", "public.patient.notes at (id)=(1)", "pgphi apply"}, "cleanup", "--confirm", planID, "--vacuum-full")
	f.exec(`UPDATE patient SET notes_encrypted = $1 WHERE id = 1`, ct)
	// Turning a flag off after the verification refuses too.
	f.verifyOK(rows)
	f.mustRun("flags", "set", "require_encryption", "off")
	refused("require_encryption turned off again", []string{"require_encryption", "is off"}, "cleanup", "--confirm", planID, "--vacuum-full")
	f.mustRun("flags", "set", "require_encryption", "on")

	// A fresh verification, then cleanup goes through (renaming the
	// ciphertext columns to the plaintext names).
	digest := lcDigest(t, c) // what the application wrote last
	f.verifyOK(rows)
	f.mustRun("cleanup", "--confirm", planID, "--rename", "--vacuum-full")
	types := lcQueryLines(t, c, `SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = 'patient'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname`)
	want := "dob bytea\nid bigint\ninfo bytea\nlast_name bytea\nlast_name_bidx bigint[]\nnotes bytea\nward integer\n"
	if types != want {
		t.Errorf("columns after cleanup --rename:\n%s\nwant:\n%s", types, want)
	}
	f.mustRun("cleanup", "--confirm", planID, "--rename", "--vacuum-full")
	f.verifyOK(rows)
	f.assertFullyEncrypted(f.status())
	if got := strings.Fields(f.mustRun("search", "patient", "last_name", "--exact", "Last42", "--reason", "lifecycle test").stdout); !slices.Equal(got, []string{"42"}) {
		t.Errorf("search after cleanup --rename: got %v, want [42]", got)
	}
	// Rollback from a renamed cleanup gives the original table back.
	f.mustRun("rollback")
	if got := lcColumns(t, c, "patient"); got != columnsBefore {
		t.Errorf("columns after rollback from cleanup --rename:\n%s\nwant:\n%s", got, columnsBefore)
	}
	if got := lcDigest(t, c); got != digest {
		t.Error("data after rollback from cleanup --rename differs from the original")
	}
}

// lcWriteStats are one phase's application writes.
type lcWriteStats struct {
	name string

	mu        sync.Mutex
	ok        int64
	refused   int64 // plaintext writes refused with the require_encryption error
	gone      int64 // plaintext writes to a column cleanup had dropped
	failed    int64 // anything else
	errors    []string
	latencies []time.Duration
	first     time.Time
	last      time.Time
}

func (s *lcWriteStats) record(d time.Duration, outcome string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.first.IsZero() {
		s.first = now.Add(-d)
	}
	s.last = now
	s.latencies = append(s.latencies, d)
	switch outcome {
	case "ok":
		s.ok++
	case "refused":
		s.refused++
	case "gone":
		s.gone++
	default:
		s.failed++
		if len(s.errors) < 5 {
			s.errors = append(s.errors, err.Error())
		}
	}
}

// summary is "N writes in T (R/s), p50, p99, longest".
func (s *lcWriteStats) summary() (longest time.Duration, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lat := slices.Clone(s.latencies)
	slices.Sort(lat)
	if len(lat) == 0 {
		return 0, "no writes"
	}
	span := s.last.Sub(s.first)
	longest = lat[len(lat)-1]
	return longest, fmt.Sprintf("%d writes in %s (%.0f/s): %d ok, %d refused (require_encryption), %d to dropped columns, %d failed; latency p50 %s, p99 %s, max %s",
		len(lat), span.Round(time.Millisecond), float64(len(lat))/span.Seconds(), s.ok, s.refused, s.gone, s.failed,
		lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond), longest.Round(time.Millisecond))
}

// lcWriter is the simulated application: one connection, a steady stream
// of writes, in the mode the migration is in.
type lcWriter struct {
	mu    sync.Mutex // held for each write; pause takes it to wait for the write in flight
	conn  *pgx.Conn
	n     int
	next  int64 // next id to insert
	rows  int64 // existing ids are 1..rows
	wards map[int64]int
	notes map[int64]*string // plaintext notes last written (before cutover)
	stats atomic.Pointer[lcWriteStats]
	// cutover: applications no longer write plaintext; their plaintext
	// attempts are expected to be refused.
	cutover atomic.Bool
}

func (w *lcWriter) pick() int64 { return 1 + int64(w.n*7919)%w.rows }

// step performs one write and records it in the current phase's stats.
func (w *lcWriter) step() {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats.Load()
	if st == nil {
		return
	}
	w.n++
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	op := w.n % 10
	var err error
	plaintext := false
	start := time.Now()
	var commit func()
	switch {
	case !w.cutover.Load() && op < 3: // insert with plaintext
		id := w.next
		notes := fmt.Sprintf("inserted note %d", w.n)
		_, err = w.conn.Exec(ctx, `INSERT INTO patient (id, last_name, notes, dob, info, ward) VALUES ($1, $2, $3, $4, $5::jsonb, $6)`,
			id, fmt.Sprintf("Ins%d", w.n), notes, time.Date(1980, 1, 1+w.n%365, 0, 0, 0, 0, time.UTC), fmt.Sprintf(`{"n": %d}`, w.n), w.n%30)
		commit = func() { w.next++; w.wards[id] = w.n % 30; w.notes[id] = &notes }
	case !w.cutover.Load() && op < 7: // update protected plaintext, sometimes to NULL
		id := w.pick()
		var notes *string
		if w.n%4 != 0 {
			s := fmt.Sprintf("updated note %d", w.n)
			notes = &s
		}
		_, err = w.conn.Exec(ctx, `UPDATE patient SET notes = $2, last_name = $3 WHERE id = $1`, id, notes, fmt.Sprintf("Upd%d", w.n))
		commit = func() { w.notes[id] = notes }
	case w.cutover.Load() && op < 2: // insert without PHI (the application would write ciphertext)
		id := w.next
		_, err = w.conn.Exec(ctx, `INSERT INTO patient (id, ward) VALUES ($1, $2)`, id, w.n%30)
		commit = func() { w.next++; w.wards[id] = w.n % 30 }
	case w.cutover.Load() && op < 4: // a plaintext write: must be refused
		plaintext = true
		if op == 2 {
			_, err = w.conn.Exec(ctx, `UPDATE patient SET notes = $2 WHERE id = $1`, w.pick(), fmt.Sprintf("plaintext after cutover %d", w.n))
		} else {
			_, err = w.conn.Exec(ctx, `INSERT INTO patient (id, last_name) VALUES ($1, $2)`, w.next+1_000_000, fmt.Sprintf("Plain%d", w.n))
		}
	default: // update an unprotected column
		id := w.pick()
		ward := w.n % 30
		var tag pgconn.CommandTag
		tag, err = w.conn.Exec(ctx, `UPDATE patient SET ward = $2 WHERE id = $1`, id, ward)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("update of ward of id %d: %d rows affected", id, tag.RowsAffected())
		}
		commit = func() { w.wards[id] = ward }
	}
	d := time.Since(start)
	var pgErr *pgconn.PgError
	switch {
	case plaintext && err == nil:
		st.record(d, "failed", fmt.Errorf("a plaintext write to a protected column succeeded after cutover (write %d)", w.n))
	case plaintext && errors.As(err, &pgErr) && pgErr.Code == "42501" && strings.Contains(pgErr.Message, "require_encryption"):
		st.record(d, "refused", nil)
	case plaintext && errors.As(err, &pgErr) && pgErr.Code == "42703":
		st.record(d, "gone", nil) // cleanup dropped the plaintext column
	case err != nil:
		st.record(d, "failed", err)
	default:
		commit()
		st.record(d, "ok", nil)
	}
}

// TestWritesDuringApplyAndCleanup runs a steady stream of application writes
// through `pgphi apply` (plaintext writes, all must succeed) and through
// `pgphi cleanup` after cutover (writes of unprotected columns must succeed,
// possibly after waiting for the lock and the purge; plaintext writes must be
// refused), and logs the longest write stall of each for the benchmark
// report.
func TestWritesDuringApplyAndCleanup(t *testing.T) {
	t.Parallel()
	const rows = 20000
	f := newFixture(t, `version: 1
environment: test
apply: { batch_size: 200, chunk_rows: 2000, lock_timeout: 500ms, adaptive: false }
tables:
  patient:
    columns:
      last_name: { class: pii, search: [exact] }
      notes: { class: phi }
      dob: { class: pii }
      info: { class: phi }
`)
	lcCreatePatient(f, rows)
	c := f.conn()
	f.mustRun("keys", "init")

	w := &lcWriter{conn: f.conn(), next: 1_000_001, rows: rows, wards: map[int64]int{}, notes: map[int64]*string{}}
	stopWriter := everyTick(5*time.Millisecond, w.step) // ~200 writes/s when writes are fast
	defer stopWriter()
	// pause stops the writes and waits until the one in flight is done.
	pause := func() {
		w.stats.Store(nil)
		w.mu.Lock()
		w.mu.Unlock()
	}

	// Phase 1: apply while the application writes plaintext.
	applyStats := &lcWriteStats{name: "apply"}
	w.stats.Store(applyStats)
	time.Sleep(300 * time.Millisecond)
	kill, _, wait := lcStart(t, f, nil, "apply", "--workers", "2")
	timer := time.AfterFunc(90*time.Second, kill)
	r := wait()
	timer.Stop()
	pause()
	if r.code != 0 {
		t.Fatalf("apply under application writes: exit %d (killed=%v)\nstdout:\n%s\nstderr:\n%s", r.code, r.killed, r.stdout, r.stderr)
	}
	applyLongest, applyLine := applyStats.summary()
	t.Logf("apply took %s; application writes during apply: %s", r.elapsed.Round(time.Millisecond), applyLine)
	if applyStats.failed != 0 || applyStats.refused != 0 || applyStats.gone != 0 {
		t.Errorf("application writes failed during apply, e.g.: %v", applyStats.errors)
	}
	if applyStats.ok < 100 {
		t.Errorf("only %d application writes during apply: the test did not exercise concurrency", applyStats.ok)
	}
	// The operator's second apply catches the rows written after the
	// first one's last pass.
	f.mustRun("apply")
	total := queryInt(t, c, `SELECT count(*) FROM patient`)
	f.verifyOK(total)
	lcCheckWriter(t, c, w, true)

	// Phase 2: cutover. Plaintext writes are refused, others go through.
	lcCutOver(f)
	cutoverStats := &lcWriteStats{name: "cutover"}
	w.cutover.Store(true)
	w.stats.Store(cutoverStats)
	time.Sleep(500 * time.Millisecond)
	pause()
	_, cutoverLine := cutoverStats.summary()
	t.Logf("application writes after cutover, before cleanup: %s", cutoverLine)
	if cutoverStats.failed != 0 || cutoverStats.gone != 0 || cutoverStats.refused == 0 || cutoverStats.ok == 0 {
		t.Errorf("after cutover: %d writes ok, %d refused, %d failed (want none), e.g.: %v", cutoverStats.ok, cutoverStats.refused, cutoverStats.failed, cutoverStats.errors)
	}
	// Rows inserted after cutover are marked for the catch-up; apply takes
	// them, then verify passes with no write since.
	f.mustRun("apply")
	planID := lcPlanID(f)
	total = queryInt(t, c, `SELECT count(*) FROM patient`)
	f.verifyOK(total)

	// Phase 3: cleanup. The application resumes as soon as cleanup has
	// passed its checks; the rows it writes meanwhile are re-verified under
	// cleanup's lock.
	cleanupStats := &lcWriteStats{name: "cleanup"}
	var resumed atomic.Bool
	_, _, wait = lcStart(t, f, func(line string) {
		if strings.HasPrefix(line, "==> cleanup") && !resumed.Swap(true) {
			w.stats.Store(cleanupStats)
		}
	}, "cleanup", "--confirm", planID, "--purge", "vacuum-full")
	r = wait()
	time.Sleep(100 * time.Millisecond)
	pause()
	if r.code != 0 {
		t.Fatalf("cleanup under application writes: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	cleanupLongest, cleanupLine := cleanupStats.summary()
	t.Logf("cleanup took %s; application writes during cleanup: %s", r.elapsed.Round(time.Millisecond), cleanupLine)
	if cleanupStats.failed != 0 {
		t.Errorf("%d application writes failed during cleanup, e.g.: %v", cleanupStats.failed, cleanupStats.errors)
	}
	if cleanupStats.ok == 0 {
		t.Error("no application write went through during cleanup")
	}
	stopWriter()

	st := lcReadCleanupState(t, c)
	if st.plain != 0 || st.encrypted != 4 || st.marker || st.trigger || st.purged != 4 || !st.migrationComplete {
		t.Fatalf("after cleanup: %s", st)
	}
	total = queryInt(t, c, `SELECT count(*) FROM patient`)
	f.verifyOK(total)
	f.assertFullyEncrypted(f.status())
	lcCheckWriter(t, c, w, false)

	t.Logf("BENCHMARK longest write stall during apply: %s", applyLongest.Round(time.Millisecond))
	t.Logf("BENCHMARK longest write stall during cleanup: %s", cleanupLongest.Round(time.Millisecond))
}

// lcCheckWriter checks that the table holds what the writer last wrote: the
// wards always, the notes while the plaintext exists.
func lcCheckWriter(t *testing.T, c *pgx.Conn, w *lcWriter, notes bool) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []int64
	var wards []int32
	for id, ward := range w.wards {
		ids = append(ids, id)
		wards = append(wards, int32(ward))
	}
	if n := queryInt(t, c, `SELECT count(*) FROM unnest($1::bigint[], $2::int[]) AS e(id, ward) LEFT JOIN patient p USING (id) WHERE p.ward IS DISTINCT FROM e.ward`, ids, wards); n != 0 {
		t.Errorf("%d of %d rows do not hold the ward the application last wrote", n, len(ids))
	}
	if !notes {
		return
	}
	ids = ids[:0]
	var vals []*string
	for id, v := range w.notes {
		ids = append(ids, id)
		vals = append(vals, v)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM unnest($1::bigint[], $2::text[]) AS e(id, notes) LEFT JOIN patient p USING (id) WHERE p.id IS NULL OR p.notes IS DISTINCT FROM e.notes`, ids, vals); n != 0 {
		t.Errorf("%d of %d rows do not hold the notes the application last wrote", n, len(ids))
	}
}

// TestFlagsCommand sets and reads the cutover flags through the binary and
// checks what the database does with require_encryption for an application
// role that has no privilege on pgphi's schema.
func TestFlagsCommand(t *testing.T) {
	t.Parallel()
	f := newFixture(t, lcSmallConfig)
	lcCreatePatient(f, 100)
	c := f.conn()
	ctx := context.Background()

	names := []string{"use_encrypted_search", "migration_complete", "require_encryption"}
	r := f.mustRun("flags")
	flags := lcFlags(t, r.stdout)
	if len(flags) != 3 {
		t.Fatalf("pgphi flags lists %d flags, want 3:\n%s", len(flags), r.stdout)
	}
	for _, n := range names {
		if on, ok := flags[n]; !ok || on {
			t.Errorf("flag %s: listed %v, on %v; want listed and off:\n%s", n, ok, on, r.stdout)
		}
	}
	dbFlag := func(name string) bool {
		t.Helper()
		var on bool
		if err := c.QueryRow(ctx, `SELECT pgphi.flag($1)`, name).Scan(&on); err != nil {
			t.Fatalf("SELECT pgphi.flag(%q): %v", name, err)
		}
		return on
	}
	for _, n := range names {
		for _, v := range []string{"on", "off", "on"} {
			r := f.mustRun("flags", "set", n, v)
			if got := lcFlags(t, r.stdout)[n]; got != (v == "on") {
				t.Errorf("flags set %s %s prints %s as %v:\n%s", n, v, n, got, r.stdout)
			}
			if got := dbFlag(n); got != (v == "on") {
				t.Errorf("after flags set %s %s, pgphi.flag says %v", n, v, got)
			}
		}
		if !strings.Contains(f.mustRun("flags").stdout, " by ") {
			t.Errorf("pgphi flags does not say who set %s", n)
		}
	}
	for _, n := range names {
		f.mustRun("flags", "set", n, "off")
		if dbFlag(n) {
			t.Errorf("flag %s still on after set off", n)
		}
	}
	// Setting a flag to its current value is fine.
	f.mustRun("flags", "set", "migration_complete", "off")

	for _, bad := range [][]string{
		{"flags", "set", "no_such_flag", "on"},
		{"flags", "set", "require_encryption", "maybe"},
		{"flags", "set", "require_encryption"},
		{"flags", "get", "require_encryption", "on"},
		{"flags", "require_encryption"},
	} {
		r := f.expectCode(2, bad...)
		if slices.Contains(bad, "no_such_flag") && !strings.Contains(r.stderr, "unknown flag") {
			t.Errorf("unknown flag: the message does not say so:\n%s", r.stderr)
		}
	}
	if dbFlag("require_encryption") || dbFlag("use_encrypted_search") {
		t.Error("a refused flags command changed a flag")
	}
	var unknown bool
	if err := c.QueryRow(ctx, `SELECT pgphi.flag('no_such_flag')`).Scan(&unknown); err != nil || unknown {
		t.Errorf("pgphi.flag of an unknown flag: %v, %v; want false", unknown, err)
	}

	// An application role with rights on its table only.
	f.mustRun("keys", "init")
	f.mustRun("apply")
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	role := "app_" + hex.EncodeToString(rnd[:]) // roles are cluster-wide: unique per run
	f.exec(`CREATE ROLE ` + role + ` NOLOGIN`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, f.url)
		if err != nil {
			t.Errorf("dropping role %s: %v", role, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP OWNED BY `+role+`; DROP ROLE `+role); err != nil {
			t.Errorf("dropping role %s: %v", role, err)
		}
	})
	f.exec(`GRANT SELECT, INSERT, UPDATE ON patient TO ` + role)
	// Every role has USAGE on schema pgphi (to call pgphi.flag), nothing
	// else: no table, no sequence.
	if n := queryInt(t, c, `SELECT count(*) FROM (VALUES (has_sequence_privilege($1, 'pgphi.write_seq', 'USAGE')),
		(has_table_privilege($1, 'pgphi.flags', 'SELECT')), (has_table_privilege($1, 'pgphi.flags', 'UPDATE'))) v(p) WHERE p`, role); n != 0 {
		t.Fatalf("test setup: role %s has %d privileges on pgphi's tables", role, n)
	}
	appConn, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer appConn.Close(ctx)
	if _, err := appConn.Exec(ctx, `SET ROLE `+role); err != nil {
		t.Fatal(err)
	}
	var who string
	if err := appConn.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != role {
		t.Fatalf("SET ROLE: current_user %q, %v", who, err)
	}
	writes := queryInt(t, c, `SELECT last_value + is_called::int FROM pgphi.write_seq`)

	// require_encryption off: the application's plaintext writes go through
	// (the SECURITY DEFINER trigger reads the flag and counts the write).
	if _, err := appConn.Exec(ctx, `INSERT INTO patient (id, last_name, notes, dob, info) VALUES (5001, 'Appwrite', 'app note', '1999-09-09', '{"a": 1}')`); err != nil {
		t.Fatalf("insert by the application role with require_encryption off: %v", err)
	}
	if _, err := appConn.Exec(ctx, `UPDATE patient SET notes = 'app update' WHERE id = 1`); err != nil {
		t.Fatalf("update by the application role with require_encryption off: %v", err)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM patient WHERE id IN (1, 5001) AND pgphi_pending`); n != 2 {
		t.Errorf("the trigger marked %d of the application role's 2 writes for encryption", n)
	}
	if n := queryInt(t, c, `SELECT last_value + is_called::int FROM pgphi.write_seq`); n < writes+2 {
		t.Errorf("write counter went from %d to %d over 2 writes by the application role", writes, n)
	}

	// require_encryption on: plaintext refused, with the documented error.
	f.mustRun("flags", "set", "require_encryption", "on")
	expectRefused := func(what, sql string) {
		t.Helper()
		_, err := appConn.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "require_encryption") {
			t.Errorf("%s by the application role with require_encryption on: want SQLSTATE 42501 mentioning require_encryption, got %v", what, err)
		}
	}
	expectRefused("plaintext insert", `INSERT INTO patient (id, last_name) VALUES (5002, 'Refused')`)
	expectRefused("plaintext update", `UPDATE patient SET dob = '2001-01-01' WHERE id = 2`)
	expectRefused("plaintext jsonb update", `UPDATE patient SET info = '{"x": 2}' WHERE id = 2`)
	if n := queryInt(t, c, `SELECT count(*) FROM patient WHERE id = 5002 OR (id = 2 AND (dob = '2001-01-01' OR info = '{"x": 2}'))`); n != 0 {
		t.Error("a refused plaintext write changed the table")
	}
	// Writes without plaintext still work.
	if _, err := appConn.Exec(ctx, `UPDATE patient SET ward = 29 WHERE id = 2`); err != nil {
		t.Errorf("update of an unprotected column by the application role with require_encryption on: %v", err)
	}
	if _, err := appConn.Exec(ctx, `INSERT INTO patient (id, ward) VALUES (5003, 3)`); err != nil {
		t.Errorf("insert without plaintext by the application role with require_encryption on: %v", err)
	}
	if _, err := appConn.Exec(ctx, `UPDATE patient SET notes = NULL WHERE id = 3`); err != nil {
		t.Errorf("clearing a protected value by the application role with require_encryption on: %v", err)
	}
	f.mustRun("flags", "set", "require_encryption", "off")
	if _, err := appConn.Exec(ctx, `UPDATE patient SET notes = 'allowed again' WHERE id = 4`); err != nil {
		t.Errorf("plaintext update after require_encryption off: %v", err)
	}
	if _, err := appConn.Exec(ctx, `RESET ROLE`); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupAfterInterruptedRollback: a rollback after cleanup that stopped
// half way (here: a ciphertext that does not decrypt, as deterministic as a
// crash) has put plaintext back into some rows. A cleanup run then must not
// report the plaintext dropped and purged while the table holds it: it must
// either refuse or drop it again.
func TestCleanupAfterInterruptedRollback(t *testing.T) {
	t.Parallel()
	const rows = 300
	f := newFixture(t, lcSmallConfig)
	lcCreatePatient(f, rows)
	c := f.conn()
	f.mustRun("keys", "init")
	f.mustRun("apply")
	planID := lcPlanID(f)
	lcCutOver(f)
	f.verifyOK(rows)
	f.mustRun("cleanup", "--confirm", planID, "--vacuum-full")
	// Row 250's ciphertext is row 2's: it does not decrypt for row 250, so
	// the restore stops there, after committing the batches before it.
	f.exec(`UPDATE patient SET notes_encrypted = (SELECT notes_encrypted FROM patient WHERE id = 2) WHERE id = 250`)
	if r := f.run("rollback"); r.code != 1 || !strings.Contains(r.stderr, "does not decrypt") {
		t.Fatalf("rollback over an undecryptable ciphertext: want exit 1 saying so, got %s", r)
	}
	restored := queryInt(t, c, `SELECT count(*) FROM patient WHERE notes IS NOT NULL`)
	if st := lcReadCleanupState(t, c); st.plain != 4 || restored == 0 {
		t.Fatalf("test setup: the interrupted rollback restored %d plaintexts: %s", restored, st)
	}

	r := f.run("cleanup", "--confirm", planID, "--vacuum-full")
	st := lcReadCleanupState(t, c)
	if r.code == 0 && st.plain != 0 {
		t.Errorf("cleanup after an interrupted rollback exits 0 and says %q, but the table still has its %d plaintext columns (%d rows of notes in plaintext)",
			firstLine(r.stdout), st.plain, queryInt(t, c, `SELECT count(*) FROM patient WHERE notes IS NOT NULL`))
	}
}

// everyTick calls step every interval in a goroutine until the returned
// function is called (once or more), which waits for the step in flight.
func everyTick(every time.Duration, step func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				step()
			}
		}
	})
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}
