package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/demo"
	"github.com/pgphi/pgphi/internal/pgcluster"
)

// phiColumns are the protected columns of patient, as in the demo config.
var phiColumns = []string{"first_name", "middle_name", "last_name", "phone_mobile", "phone_home", "email", "date_of_birth"}

// searchKinds are the demo config's search kinds: every kind is exercised.
var searchKinds = map[string]string{
	"first_name":    "[exact, prefix, phonetic]",
	"middle_name":   "[exact]",
	"last_name":     "[exact, prefix, contains, phonetic]",
	"phone_mobile":  "[phone]",
	"phone_home":    "[phone]",
	"email":         "[exact]",
	"date_of_birth": "[date]",
}

// The lock settings are small so that the lock scenario's "longer than
// lock_timeout × ddl_retries" takes seconds, not minutes.
const (
	lockTimeout = 300 * time.Millisecond
	ddlRetries  = 4
)

// trialConfig is the pgphi.yaml of every trial: small batches and chunks, so
// a run has many checkpoints to interrupt.
func trialConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nenvironment: test\napply: { batch_size: 500, chunk_rows: 5000, workers: 2, lock_timeout: %dms, ddl_retries: %d }\n",
		lockTimeout.Milliseconds(), ddlRetries)
	b.WriteString("tables:\n  patient:\n    primary_key: uid\n    columns:\n")
	for _, c := range phiColumns {
		fmt.Fprintf(&b, "      %s: { class: pii, search: %s }\n", c, searchKinds[c])
	}
	return b.String()
}

// canaryPrefix starts every planted value (names and e-mail of -canaries
// rows, and everything the writer writes): it must never appear in anything
// pgphi prints or writes.
const canaryPrefix = "CANARY-faults-"

// writerPrefix starts the key of every row the writer inserts.
const writerPrefix = "zzfaults-"

// template is a database the trials copy, with the working directory that
// belongs to it (the audit mirror file).
type template struct {
	name, dir string
}

// baseline is what is known about the original data (template t0).
type baseline struct {
	rows       int64
	size       string
	columns    []string           // every column of patient, in order
	pool       []string           // keys of the rows the writer may touch
	poolVals   map[string]rowVals // their original protected values
	canaryKeys []string           // keys of the rows with planted values ...
	canaryLast map[string]string  // ... and their planted last names
	fullMD5    string             // md5 of every column of the rows outside the pool
	restMD5    string             // md5 of the unprotected columns of those rows
	nonNull    map[string]int64   // per protected column: non-NULL values outside the pool
	indexes    int64              // indexes on patient
	load       time.Duration
}

// env is the working state of a campaign.
type env struct {
	o       options
	cl      *pgcluster.Cluster
	admin   *pgx.Conn
	dir     string // everything: configs, key file, logs
	bin     string // the pgphi binary
	binInfo string // where it came from, for the report
	keyFile string
	copies  int
	base    baseline
	t0      *template // the original data
	t1      *template // applied, cut over (both flags on) and verified
	t2      *template // t1 cleaned up
	tA      *template // applied and verified, not cut over: the re-encryption trials' start
	planID  string
	// durations of the uninterrupted control runs: apply, backfill,
	// cleanup, rollback (before cleanup), rollback-cleaned (after),
	// reencrypt.
	durations map[string]time.Duration
	tsDir     string // the disk-full scenario's mount point
}

func newEnv(ctx context.Context, o options) (*env, error) {
	e := &env{o: o, durations: map[string]time.Duration{}}
	var err error
	if e.dir, err = os.MkdirTemp("", "pgphi-faults-"); err != nil {
		return nil, err
	}
	// The server (user postgres when we are root) writes nothing here, but
	// the disk-full mount point lives here and must be reachable.
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return nil, err
	}
	logf("working directory %s", e.dir)
	if e.bin, e.binInfo, err = buildPgphi(ctx, o.pgphiBin, e.dir); err != nil {
		return nil, err
	}
	e.keyFile = filepath.Join(e.dir, "kek")
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(e.keyFile, k, 0o600); err != nil {
		return nil, err
	}
	logf("starting a throwaway PostgreSQL cluster (durable settings)")
	e.cl, err = pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"shared_buffers":     "256MB",
		"max_wal_size":       "2GB",
		"checkpoint_timeout": "15min",
		"jit":                "off",
	}})
	if err != nil {
		return nil, err
	}
	if e.admin, err = e.connect(ctx, "postgres"); err != nil {
		e.cl.Stop()
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	if e.admin != nil {
		e.admin.Close(context.Background())
	}
	if e.tsDir != "" {
		unmount(e.tsDir)
	}
	if e.cl != nil {
		if err := e.cl.Stop(); err != nil {
			logf("stopping the cluster: %v", err)
		}
	}
	if !e.o.keepLogs {
		os.RemoveAll(e.dir)
	} else {
		logf("working directory kept: %s", e.dir)
	}
}

// url is a connection string to db for the campaign's own sessions, whose
// application_name is not pgphi's (the conn-drop scenario terminates pgphi's).
func (e *env) url(db, app string) string {
	return e.cl.URL(db) + "&application_name=" + app
}

func (e *env) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, e.url(db, "faults"))
}

// pgphiEnv is the environment of every pgphi process.
func (e *env) pgphiEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PGPHI_KEY_FILE="+e.keyFile, "PGPHI_ADAPTIVE=off", "PGPHI_REASON=fault campaign")
}

// makeT0 creates the original data: the demo's patient table, planted values
// in -canaries rows, frozen; and records the baseline the checks compare to.
func (e *env) makeT0(ctx context.Context) error {
	t := &template{name: "faults_t0", dir: filepath.Join(e.dir, "faults_t0")}
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return err
	}
	logf("creating %s: demo data for %d patients", t.name, e.o.patients)
	start := time.Now()
	if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+t.name); err != nil {
		return err
	}
	conn, err := e.connect(ctx, t.name)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := demo.CreateSchema(ctx, conn); err != nil {
		return err
	}
	if _, err := demo.Populate(ctx, conn, demo.Options{Patients: e.o.patients, Seed: 1}); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP TABLE patient_identification, analysis_result, result_mutation, clinical_data CASCADE"); err != nil {
		return err
	}
	// The pool comes first in md5 order; the planted rows follow it, so the
	// writer never touches them and search can find them after cleanup.
	if _, err := conn.Exec(ctx, `WITH c AS (SELECT uid, row_number() OVER (ORDER BY md5(uid)) AS n FROM patient ORDER BY md5(uid) OFFSET $1 LIMIT $2)
		UPDATE patient p SET first_name = $3 || 'fn-' || c.n, last_name = $3 || 'ln-' || c.n, email = $3 || c.n || '@example.org'
		FROM c WHERE p.uid = c.uid`, e.o.poolSize, e.o.canaries, canaryPrefix); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "VACUUM (FREEZE, ANALYZE) patient"); err != nil {
		return err
	}
	b := &e.base
	b.load = time.Since(start)
	if err := conn.QueryRow(ctx, "SELECT count(*), pg_size_pretty(pg_total_relation_size('patient')) FROM patient").Scan(&b.rows, &b.size); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, "SELECT attname FROM pg_attribute WHERE attrelid = 'patient'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
	if err != nil {
		return err
	}
	if b.columns, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return err
	}
	rows, err = conn.Query(ctx, "SELECT uid FROM patient ORDER BY md5(uid) LIMIT $1", e.o.poolSize)
	if err != nil {
		return err
	}
	if b.pool, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return err
	}
	if b.poolVals, err = readVals(ctx, conn, b.pool); err != nil {
		return err
	}
	b.canaryLast = map[string]string{}
	rows, err = conn.Query(ctx, "SELECT uid, last_name FROM patient WHERE last_name LIKE $1 || '%' ORDER BY uid", canaryPrefix)
	if err != nil {
		return err
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		b.canaryKeys = append(b.canaryKeys, k)
		b.canaryLast[k] = v
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(b.canaryKeys) != e.o.canaries {
		return fmt.Errorf("planted %d rows, want %d", len(b.canaryKeys), e.o.canaries)
	}
	if b.fullMD5, err = untouchedMD5(ctx, conn, b.columns, b.pool); err != nil {
		return err
	}
	if b.restMD5, err = untouchedMD5(ctx, conn, unprotected(b.columns), b.pool); err != nil {
		return err
	}
	if b.nonNull, err = nonNullCounts(ctx, conn, "", b.pool); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_index WHERE indrelid = 'patient'::regclass").Scan(&b.indexes); err != nil {
		return err
	}
	e.t0 = t
	logf("%s: %d rows, %s, %d planted rows, loaded in %s", t.name, b.rows, b.size, len(b.canaryKeys), b.load.Round(time.Millisecond))
	return nil
}

// unprotected are the columns outside phiColumns.
func unprotected(cols []string) []string {
	var out []string
	for _, c := range cols {
		if !isPHI(c) {
			out = append(out, c)
		}
	}
	return out
}

func isPHI(c string) bool {
	for _, p := range phiColumns {
		if p == c {
			return true
		}
	}
	return false
}

// makeT1 applies, cuts over and verifies a copy of t0 (no writer, no
// faults): the starting point of the cleanup and rollback trials.
func (e *env) makeT1(ctx context.Context) error {
	t, err := e.newTemplate(ctx, "faults_t1", e.t0)
	if err != nil {
		return err
	}
	x := &trial{e: e, name: "template " + t.name, db: t.name, dir: t.dir, config: filepath.Join(t.dir, "pgphi.yaml")}
	for _, args := range [][]string{
		{"keys", "init"},
		{"apply"},
		{"flags", "set", "use_encrypted_search", "on"},
		{"flags", "set", "require_encryption", "on"},
		{"verify"},
	} {
		if r := x.run(ctx, args[0], nil, args...); r.code != 0 {
			return fmt.Errorf("%s: pgphi %s: %s", t.name, strings.Join(args, " "), r.summary())
		}
	}
	if e.planID, err = x.planID(ctx); err != nil {
		return err
	}
	e.t1 = t
	return nil
}

// makeTA applies and verifies a copy of t0 (no writer, no faults), without
// the cutover: the application still writes plaintext, as it does while
// an operator rotates the data key and re-encrypts.
func (e *env) makeTA(ctx context.Context) error {
	t, err := e.newTemplate(ctx, "faults_ta", e.t0)
	if err != nil {
		return err
	}
	x := &trial{e: e, name: "template " + t.name, db: t.name, dir: t.dir, config: filepath.Join(t.dir, "pgphi.yaml")}
	for _, args := range [][]string{{"keys", "init"}, {"apply"}, {"verify"}} {
		if r := x.run(ctx, args[0], nil, args...); r.code != 0 {
			return fmt.Errorf("%s: pgphi %s: %s", t.name, strings.Join(args, " "), r.summary())
		}
	}
	e.tA = t
	return nil
}

// makeT2 cleans up a copy of t1: the starting point of the rollback trials
// after cleanup.
func (e *env) makeT2(ctx context.Context) error {
	t, err := e.newTemplate(ctx, "faults_t2", e.t1)
	if err != nil {
		return err
	}
	x := &trial{e: e, name: "template " + t.name, db: t.name, dir: t.dir, config: filepath.Join(t.dir, "pgphi.yaml")}
	if r := x.run(ctx, "cleanup", nil, "cleanup", "--confirm", e.planID, "--vacuum-full"); r.code != 0 {
		return fmt.Errorf("%s: pgphi cleanup: %s", t.name, r.summary())
	}
	e.t2 = t
	return nil
}

// newTemplate copies from into a new template database and directory.
func (e *env) newTemplate(ctx context.Context, name string, from *template) (*template, error) {
	t := &template{name: name, dir: filepath.Join(e.dir, name)}
	logf("creating %s from %s", name, from.name)
	if err := e.copyDB(ctx, from.name, name); err != nil {
		return nil, err
	}
	if err := copyDir(from.dir, t.dir); err != nil {
		return nil, err
	}
	return t, os.WriteFile(filepath.Join(t.dir, "pgphi.yaml"), []byte(trialConfig()), 0o644)
}

// copyDB creates name as a byte-for-byte copy of template.
func (e *env) copyDB(ctx context.Context, template, name string) error {
	_, err := e.admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize()))
	return err
}

func (e *env) drop(ctx context.Context, name string) {
	if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		logf("dropping %s: %v", name, err)
	}
}

// copyDir copies the regular files of src (not recursive) into a new dst.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, de := range ents {
		if !de.Type().IsRegular() || strings.HasSuffix(de.Name(), ".log") {
			continue
		}
		if err := copyFile(filepath.Join(src, de.Name()), filepath.Join(dst, de.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildPgphi builds ./cmd/pgphi from the working tree into dir, or takes the
// given binary, and says which source it is.
func buildPgphi(ctx context.Context, given, dir string) (bin, info string, err error) {
	if given != "" {
		abs, err := filepath.Abs(given)
		if err != nil {
			return "", "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", "", err
		}
		return abs, "the binary given with -pgphi (" + given + ")", nil
	}
	logf("building pgphi")
	bin = filepath.Join(dir, "pgphi")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgphi")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/pgphi (run the campaign from the repository root): %w", err)
	}
	info = "built from the working tree"
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		info += " at commit " + strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no", "--", "*.go", "*.sql").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			info += fmt.Sprintf(" with uncommitted changes to %d Go/SQL files", len(strings.Split(strings.TrimSpace(string(st)), "\n")))
		}
	}
	return bin, info, nil
}
