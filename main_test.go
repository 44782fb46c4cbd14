package pgphi_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

// The examples' database: table patient applied by pgphi, and its key file.
var exampleURL, exampleKeyFile string

func TestMain(m *testing.M) {
	pgtest.MainSetup(m, func() (func(), error) {
		url, drop, err := pgtest.CreateDatabase("examples")
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "pgphi-examples")
		if err != nil {
			drop()
			return nil, err
		}
		teardown := func() { drop(); os.RemoveAll(dir) }
		f, err := newFixture(context.Background(), url, dir, patientDDL, patientConfig)
		if err != nil {
			teardown()
			return nil, err
		}
		f.close()
		exampleURL, exampleKeyFile = url, f.keyFile
		return teardown, nil
	})
}

const patientDDL = `CREATE TABLE public.patient (uid text PRIMARY KEY, last_name text, date_of_birth date, phone text, visits int);
INSERT INTO public.patient VALUES
	('P1', 'Smith', '1980-02-29', '+1 415 555 2671', 3),
	('P2', 'Smyth', '1991-07-01', '(415) 555-0100', 1),
	('P3', 'Jones', '2001-12-24', NULL, NULL),
	('P4', NULL, NULL, '020 7946 0958', 7);`

const patientConfig = `version: 1
tables:
  patient:
    columns:
      last_name:     { class: pii, search: [exact, prefix, phonetic] }
      date_of_birth: { class: pii, search: [date] }
      phone:         { class: pii, search: [phone] }
      visits:        { class: phi }
`

// fixture is a database pgphi applied, seen through pgphi's own packages:
// what the command line does.
type fixture struct {
	url, keyFile string
	pool         *pgxpool.Pool // pgphi's canonical sessions, superuser
	cfg          *config.Config
	plan         *engine.Plan
	ring         *keys.Keyring
}

func newFixture(ctx context.Context, url, dir, ddl, cfgYAML string) (*fixture, error) {
	f, err := prepareFixture(ctx, url, dir, ddl, cfgYAML)
	if err != nil {
		return nil, err
	}
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	if err := r.Apply(ctx); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	return f, nil
}

// prepareFixture is newFixture up to apply: schema, keys, state and plan.
func prepareFixture(ctx context.Context, url, dir, ddl, cfgYAML string) (*fixture, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	_, err = conn.Exec(ctx, ddl)
	conn.Close(ctx)
	if err != nil {
		return nil, err
	}
	f := &fixture{url: url, keyFile: filepath.Join(dir, "pgphi.key")}
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(f.keyFile, k, 0o600); err != nil {
		return nil, err
	}
	if f.pool, err = dbconn.Open(ctx, url, 4); err != nil {
		return nil, err
	}
	if f.cfg, err = config.Parse("pgphi.yaml", []byte(cfgYAML)); err != nil {
		return nil, err
	}
	c, err := f.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	_, err = state.Ensure(ctx, c)
	c.Release()
	if err != nil {
		return nil, err
	}
	if _, err := keys.Init(ctx, f.pool, keys.KeyFileProvider(f.keyFile)); err != nil {
		return nil, err
	}
	if f.ring, err = keys.Load(ctx, f.pool, keys.KeyFileProvider(f.keyFile)); err != nil {
		return nil, err
	}
	if err := f.replan(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fixture) replan(ctx context.Context) error {
	tables, err := catalog.Resolve(ctx, f.pool, f.cfg)
	if err != nil {
		return err
	}
	f.plan, err = engine.NewPlan(f.cfg, tables)
	return err
}

func (f *fixture) close() { f.pool.Close() }

// setup makes a database of its own for a test.
func setup(t *testing.T) *fixture {
	t.Helper()
	url := pgtest.NewDatabase(t)
	f, err := newFixture(context.Background(), url, t.TempDir(), patientDDL, patientConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	return f
}
