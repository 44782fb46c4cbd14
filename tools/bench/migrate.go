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

// migrateBench measures the writer's longest stall during (1) the naive
// script, (2) `pgphi migrate up`, (3) `pgphi migrate up` while a report
// holds a table lock for 5 s (lock_timeout 500ms: DDL gives up and retries
// instead of queueing the writer behind it), (4) the naive ALTER behind the
// same report.
func (e *env) migrateBench(ctx context.Context) error {
	naive, err := e.naiveRun(ctx, naiveMigrations, false)
	if err != nil {
		return fmt.Errorf("naive script: %w", err)
	}
	logf("baseline (plain DDL script): %s, writer max stall %s over %d updates", naive.took.Round(time.Millisecond), naive.writer.max.Round(time.Millisecond), naive.writer.n)
	run, err := e.migrateRun(ctx, false)
	if err != nil {
		return err
	}
	logf("pgphi migrate up: %s, writer max stall %s over %d updates", run.took.Round(time.Millisecond), run.writer.max.Round(time.Millisecond), run.writer.n)
	blocked, err := e.migrateRun(ctx, true)
	if err != nil {
		return err
	}
	logf("pgphi migrate up behind a 5 s report (--lock-timeout 500ms): %s, writer max stall %s over %d updates", blocked.took.Round(time.Millisecond), blocked.writer.max.Round(time.Millisecond), blocked.writer.n)
	naiveBlocked, err := e.naiveRun(ctx, naiveMigrations[:1], true)
	if err != nil {
		return fmt.Errorf("naive script behind a report: %w", err)
	}
	logf("baseline ALTER without lock_timeout behind the same report: %s, writer max stall %s over %d updates", naiveBlocked.took.Round(time.Millisecond), naiveBlocked.writer.max.Round(time.Millisecond), naiveBlocked.writer.n)
	logf("writer max stall: pgphi migrate %.2fx the plain script's; behind a report %.2fx the plain ALTER's",
		float64(run.writer.max)/float64(naive.writer.max), float64(blocked.writer.max)/float64(naiveBlocked.writer.max))
	return nil
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

func (e *env) naiveRun(ctx context.Context, stmts []string, behindReport bool) (*stallRun, error) {
	db, err := e.copyOf(ctx, "bench_template", "the plain migration script")
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

func (e *env) migrateRun(ctx context.Context, behindReport bool) (*stallRun, error) {
	db, err := e.copyOf(ctx, "bench_template", "pgphi migrate up")
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
	if behindReport {
		args = append(args, "--lock-timeout", "500ms")
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
