package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// The schema migrations `-only migrate` runs through `pgphi migrate up` on
// the patient table, in the form lint asks for (concurrent index builds,
// constraints NOT VALID then validated, a constant default), while the
// writer updates one row every few milliseconds.
var benchMigrations = []string{
	"ALTER TABLE patient ADD COLUMN visit_count integer;\n",
	"ALTER TABLE patient ADD COLUMN risk_flag boolean DEFAULT false;\n",
	"CREATE INDEX CONCURRENTLY patient_created_idx ON patient (created_at);\n",
	"ALTER TABLE patient ADD CONSTRAINT patient_age_check CHECK (age IS NULL OR age >= 0) NOT VALID;\n",
	"ALTER TABLE patient VALIDATE CONSTRAINT patient_age_check;\n",
	"CREATE UNIQUE INDEX CONCURRENTLY patient_patient_id_uid_key ON patient (patient_id, uid);\n",
}

// The same changes as a hand-written script would make them: plain index
// builds and constraints validated at once (the baseline).
var naiveMigrations = []string{
	"ALTER TABLE patient ADD COLUMN visit_count integer",
	"ALTER TABLE patient ADD COLUMN risk_flag boolean DEFAULT false",
	"CREATE INDEX patient_created_idx ON patient (created_at)",
	"ALTER TABLE patient ADD CONSTRAINT patient_age_check CHECK (age IS NULL OR age >= 0)",
	"CREATE UNIQUE INDEX patient_patient_id_uid_key ON patient (patient_id, uid)",
}

// migrateResults are the writer's stalls during schema migrations, on a
// table of rows rows.
type migrateResults struct {
	rows int
	runs []migrateRun
}

// migrateRun is one way of running the migrations.
type migrateRun struct {
	name        string
	pgphi       bool
	lockTimeout string // "" for the plain script (none)
	blocked     bool   // behind a report holding a table lock for 5 s
	stallRun
}

// migrateBench measures the writer's longest stall, on copies of template
// (rows rows), during: the plain DDL script and `pgphi migrate up`
// (default lock_timeout, 2 s); then behind a report that holds a table
// lock for 5 s, the plain ALTER (it queues the writer behind it for the
// whole report), `pgphi migrate up` with the default lock_timeout and with
// --lock-timeout 500ms (DDL gives up and retries instead of queueing the
// writer for longer than the timeout).
func (e *env) migrateBench(ctx context.Context, template string, rows int) (*migrateResults, error) {
	res := &migrateResults{rows: rows}
	type scenario struct {
		name        string
		pgphi       bool
		lockTimeout string
		blocked     bool
	}
	for _, sc := range []scenario{
		{"plain DDL script (baseline)", false, "", false},
		{"pgphi migrate up", true, "2s (default)", false},
		{"plain ALTER without lock_timeout behind a 5 s report (baseline)", false, "", true},
		{"pgphi migrate up behind a 5 s report", true, "2s (default)", true},
		{"pgphi migrate up --lock-timeout 500ms behind a 5 s report", true, "500ms", true},
	} {
		var run *stallRun
		var err error
		switch {
		case !sc.pgphi && !sc.blocked:
			run, err = e.naiveRun(ctx, template, naiveMigrations, false)
		case !sc.pgphi:
			run, err = e.naiveRun(ctx, template, naiveMigrations[:1], true)
		default:
			lt := ""
			if sc.lockTimeout == "500ms" {
				lt = "500ms"
			}
			run, err = e.migrateRun(ctx, template, sc.blocked, lt)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		logf("%s: %s, writer max stall %s over %d updates", sc.name, run.took.Round(time.Millisecond), run.writer.max.Round(time.Millisecond), run.writer.n)
		res.runs = append(res.runs, migrateRun{name: sc.name, pgphi: sc.pgphi, lockTimeout: sc.lockTimeout, blocked: sc.blocked, stallRun: *run})
	}
	return res, nil
}

type stallRun struct {
	took   time.Duration
	writer writerStats
}

// holdReport opens a transaction that reads patient and keeps its lock
// for d, as a long report would.
func (e *env) holdReport(ctx context.Context, db string, d time.Duration) (func(), error) {
	c, err := e.connect(ctx, db)
	if err != nil {
		return nil, err
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, "SELECT count(*) FROM public.patient"); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		_ = tx.Rollback(context.Background())
		c.Close(context.Background())
		close(done)
	}()
	return func() { <-done }, nil
}

func (e *env) naiveRun(ctx context.Context, template string, stmts []string, behindReport bool) (*stallRun, error) {
	db, err := e.copyOf(ctx, template, "the plain migration script")
	if err != nil {
		return nil, err
	}
	defer e.drop(ctx, db)
	c, err := e.connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	w, err := startWriter(ctx, e.cl.URL(db), e.o.writerEvery)
	if err != nil {
		return nil, err
	}
	wait := func() {}
	time.Sleep(200 * time.Millisecond)
	if behindReport {
		if wait, err = e.holdReport(ctx, db, 5*time.Second); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	for _, s := range stmts {
		if _, err := c.Exec(ctx, "SET search_path = public; "+s, pgx.QueryExecModeSimpleProtocol); err != nil {
			w.stop()
			return nil, err
		}
	}
	took := time.Since(start)
	wait()
	time.Sleep(200 * time.Millisecond)
	return &stallRun{took: took, writer: w.stop()}, nil
}

func (e *env) migrateRun(ctx context.Context, template string, behindReport bool, lockTimeout string) (*stallRun, error) {
	db, err := e.copyOf(ctx, template, "pgphi migrate up")
	if err != nil {
		return nil, err
	}
	defer e.drop(ctx, db)
	dir := filepath.Join(e.dir, db, "migrations")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i, s := range benchMigrations {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d_step.up.sql", i+1)), []byte(s), 0o644); err != nil {
			return nil, err
		}
	}
	config := filepath.Join(e.dir, db, "pgphi.yaml")
	if err := os.WriteFile(config, []byte(benchConfig(searchNone)), 0o644); err != nil {
		return nil, err
	}
	if _, err := e.runPgphi(ctx, db, "migrate-hash", nil, "migrate", "--config", config, "--dir", dir, "hash"); err != nil {
		return nil, err
	}
	w, err := startWriter(ctx, e.cl.URL(db), e.o.writerEvery)
	if err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond)
	args := []string{"migrate", "--config", config, "--dir", dir, "up", "--reason", "benchmark"}
	wait := func() {}
	if lockTimeout != "" {
		args = append(args, "--lock-timeout", lockTimeout)
	}
	if behindReport {
		if wait, err = e.holdReport(ctx, db, 5*time.Second); err != nil {
			return nil, err
		}
	}
	r, err := e.runPgphi(ctx, db, "migrate-up", nil, args...)
	wait()
	time.Sleep(200 * time.Millisecond)
	st := w.stop()
	if err != nil {
		return nil, fmt.Errorf("pgphi migrate up: %w\n%s", err, tail(r.output, 20))
	}
	return &stallRun{took: r.took, writer: st}, nil
}
