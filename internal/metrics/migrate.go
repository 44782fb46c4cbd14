package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// migrationMetrics are the metrics of `migrate up` and `migrate down`:
// counts, a version number and seconds, never a name of a migration or a
// statement's text.
type migrationMetrics struct {
	done, planned, version, runnerWait prometheus.Gauge
	statements                         prometheus.Counter
}

func (r *Recorder) registerMigrations() {
	g := func(name, help string) prometheus.Gauge {
		v := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		r.reg.MustRegister(v)
		return v
	}
	r.migrations = &migrationMetrics{
		done:       g("pgphi_migrations_done", "Schema migrations this run of migrate up or down has applied or reverted."),
		planned:    g("pgphi_migrations_planned", "Schema migrations this run of migrate up or down has to apply or revert."),
		version:    g("pgphi_migration_version", "The version of the schema migration running, or of the last one applied (-1: none yet)."),
		runnerWait: g("pgphi_migration_runner_lock_wait_seconds", "Seconds this run waited for another migration runner to release the runner lock."),
	}
	r.migrations.version.Set(-1)
	r.migrations.statements = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgphi_migration_statements_total",
		Help: "Statements of schema migration files this run executed."})
	r.reg.MustRegister(r.migrations.statements)
}

// MigrationsPlanned records how many migrations the run has to apply or
// revert.
func (r *Recorder) MigrationsPlanned(n int) {
	if r == nil {
		return
	}
	r.migrations.planned.Set(float64(n))
}

// MigrationStarted records the version of the migration now running.
func (r *Recorder) MigrationStarted(version int64) {
	if r == nil {
		return
	}
	r.migrations.version.Set(float64(version))
}

// MigrationStatement counts one statement executed.
func (r *Recorder) MigrationStatement() {
	if r == nil {
		return
	}
	r.migrations.statements.Inc()
}

// MigrationDone counts a migration applied or reverted; version is the
// one the database is at afterwards.
func (r *Recorder) MigrationDone(version int64) {
	if r == nil {
		return
	}
	r.migrations.done.Inc()
	r.migrations.version.Set(float64(version))
}

// RunnerLockWait records how long the run waited for the runner lock.
func (r *Recorder) RunnerLockWait(d time.Duration) {
	if r == nil {
		return
	}
	r.migrations.runnerWait.Set(d.Seconds())
}
