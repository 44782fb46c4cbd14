package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

// ownerCodeDDL is the application owner's table with its own code on it: a
// trigger that records who ran it, and a CHECK that fails for any dba login
// (the actors' dba logins are named dba_...).
const ownerCodeDDL = `
CREATE TABLE public.fired (who text, via text);
GRANT INSERT ON public.fired TO PUBLIC;
CREATE FUNCTION public.note_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.fired VALUES (current_user, TG_OP); RETURN NEW; END $$;
CREATE FUNCTION public.not_dba(v text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RETURN current_user::text NOT LIKE 'dba\_%'; END $$;
CREATE TABLE public.visit (id int PRIMARY KEY, note text, code text, CONSTRAINT by_owner CHECK (public.not_dba(code)));
INSERT INTO public.visit SELECT g, 'note ' || g, 'c' || g FROM generate_series(1, 500) g;
CREATE TRIGGER note_update BEFORE UPDATE ON public.visit FOR EACH ROW EXECUTE FUNCTION public.note_update();
`

const ownerCodeConfig = "version: 1\napply: { batch_size: 64, workers: 2 }\ntables:\n  visit:\n    columns:\n      note: { class: pii }\n"

type ownerFixture struct {
	url    string
	a      *pgtest.Actors
	admin  *pgxpool.Pool // superuser, pgphi's session settings
	dba    *pgxpool.Pool // a dba login, pgphi's session settings
	owner  *pgx.Conn
	cfg    *config.Config
	keyDir string
}

// ownerSetup builds ddl as the application owner (not a superuser), then
// pgphi's state, roles and keys as a superuser, as `roles init` would.
func ownerSetup(t *testing.T, ddl, cfgYAML string) *ownerFixture {
	t.Helper()
	ctx := context.Background()
	f := &ownerFixture{url: pgtest.NewDatabase(t)}
	f.a = pgtest.NewActors(t, f.url)
	f.owner = f.a.Connect(t, f.a.AppOwner)
	if _, err := f.owner.Exec(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.admin, err = dbconn.Open(ctx, f.url, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.admin.Close)
	c, err := f.admin.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Ensure(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Release()
	if _, err := policy.InitRoles(ctx, f.admin, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	f.keyDir = t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(filepath.Join(f.keyDir, "kek"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Init(ctx, f.admin, keys.KeyFileProvider(filepath.Join(f.keyDir, "kek"))); err != nil {
		t.Fatal(err)
	}
	if f.dba, err = dbconn.Open(ctx, f.a.URL(f.a.DBA), 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.dba.Close)
	if f.cfg, err = config.Parse("pgphi.yaml", []byte(cfgYAML)); err != nil {
		t.Fatal(err)
	}
	return f
}

// runner plans against pool and returns a runner that works through it.
func (f *ownerFixture) runner(t *testing.T, pool *pgxpool.Pool) *Runner {
	t.Helper()
	ctx := context.Background()
	tables, err := catalog.Resolve(ctx, pool, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(f.cfg, tables)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(ctx, pool, keys.KeyFileProvider(filepath.Join(f.keyDir, "kek")))
	if err != nil {
		t.Fatal(err)
	}
	return &Runner{Pool: pool, Keys: ring, Config: f.cfg, Plan: plan, Log: &strings.Builder{}}
}

// fired lists who ran the owner's trigger, distinct.
func (f *ownerFixture) fired(t *testing.T) []string {
	t.Helper()
	rows, err := f.owner.Query(context.Background(), "SELECT DISTINCT who FROM public.fired ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	who, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return who
}

// TestBackfillRunsOwnerCodeAsOwner: owner code fired by pgphi's statements. The
// owner's trigger and CHECK fire inside the dba's backfill, catch-up and
// sweep; they run as the owner (the dba login is a member of it), never
// with the dba's rights: the trigger records the owner, and the CHECK,
// which fails for a dba login, passes.
func TestBackfillRunsOwnerCodeAsOwner(t *testing.T) {
	ctx := context.Background()
	f := ownerSetup(t, ownerCodeDDL, ownerCodeConfig)
	r := f.runner(t, f.dba)
	if err := r.Apply(ctx); err != nil {
		t.Fatalf("apply as the dba: %v", err)
	}
	if who := f.fired(t); len(who) != 1 || who[0] != f.a.AppOwner {
		t.Fatalf("the owner's trigger ran as %v, want only %s", who, f.a.AppOwner)
	}
	var missing int
	if err := f.admin.QueryRow(ctx, "SELECT count(*) FROM public.visit WHERE note_encrypted IS NULL").Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("rows left unencrypted: %d, %v", missing, err)
	}
	// The sweep and catch-up (the writer changed rows) run as the owner too.
	if _, err := f.owner.Exec(ctx, "DELETE FROM public.fired; UPDATE public.visit SET note = note || '!' WHERE id % 7 = 0; UPDATE public.visit SET note_encrypted = NULL WHERE id = 3"); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx); err != nil {
		t.Fatalf("second apply as the dba: %v", err)
	}
	for _, who := range f.fired(t) {
		if who != f.a.AppOwner {
			t.Fatalf("the owner's trigger ran as %s during catch-up", who)
		}
	}
	// The session's own role is back for pgphi's state: the chunks were
	// written in the same transactions as the batches.
	var open int
	if err := f.dba.QueryRow(ctx, "SELECT count(*) FROM pgphi.chunks WHERE NOT done").Scan(&open); err != nil || open != 0 {
		t.Fatalf("chunks still open: %d, %v", open, err)
	}
}

// TestSuperuserRefusedWhereOwnerCodeExists: SET ROLE is not a sandbox, so
// in production a superuser login is refused for pgphi's statements on a
// table whose owner has code on it; nothing is written. Variant: outside
// production the superuser's statements run as the owner.
func TestSuperuserRefusedWhereOwnerCodeExists(t *testing.T) {
	ctx := context.Background()
	f := ownerSetup(t, ownerCodeDDL, ownerCodeConfig)
	f.cfg.Environment = "production"
	r := f.runner(t, f.admin)
	err := r.Apply(ctx)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "trigger note_update calls public.note_update()") || !strings.Contains(err.Error(), f.a.AppOwner) {
		t.Fatalf("superuser apply in production: %v (want refused, naming the trigger and the owner)", err)
	}
	var written int
	if err := f.admin.QueryRow(ctx, "SELECT count(*) FROM public.visit WHERE note_encrypted IS NOT NULL").Scan(&written); err != nil || written != 0 {
		t.Fatalf("rows written by a refused apply: %d, %v", written, err)
	}
	if who := f.fired(t); len(who) != 0 {
		t.Fatalf("the owner's trigger ran under a refused apply: %v", who)
	}

	f.cfg.Environment = "development"
	if err := f.runner(t, f.admin).Apply(ctx); err != nil {
		t.Fatalf("superuser apply outside production: %v", err)
	}
	if who := f.fired(t); len(who) != 1 || who[0] != f.a.AppOwner {
		t.Fatalf("the owner's trigger ran as %v under a superuser login, want only %s", who, f.a.AppOwner)
	}
}

// TestOwnerCodeReport: what `pgphi check` shows where owner code would run
// with rights other than its owner's: a table whose owner the dba is not a
// member of (the writer's), and any table under a superuser login. A table
// the dba can act as owner of needs no line.
func TestOwnerCodeReport(t *testing.T) {
	ctx := context.Background()
	f := ownerSetup(t, ownerCodeDDL, ownerCodeConfig+"  other:\n    columns:\n      note: { class: pii }\n")
	if _, err := f.admin.Exec(ctx, `CREATE TABLE public.other (id int PRIMARY KEY, note text);
		CREATE FUNCTION public.other_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
		CREATE TRIGGER other_touch BEFORE UPDATE ON public.other FOR EACH ROW EXECUTE FUNCTION public.other_touch();
		CREATE POLICY other_rows ON public.other USING (public.not_dba(note));
		ALTER FUNCTION public.other_touch() OWNER TO `+pgx.Identifier{f.a.AppWriter}.Sanitize()+`;
		ALTER TABLE public.other OWNER TO `+pgx.Identifier{f.a.AppWriter}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	r := f.runner(t, f.dba)
	lines, err := OwnerCodeReport(ctx, f.dba, r.Plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "public.other: ") || !strings.Contains(lines[0], "not a member of its owner "+f.a.AppWriter) ||
		!strings.Contains(lines[0], "trigger other_touch calls public.other_touch()") || !strings.Contains(lines[0], "row security policy other_rows calls public.not_dba(text) owned by role "+f.a.AppOwner) {
		t.Fatalf("report as the dba:\n%s", strings.Join(lines, "\n"))
	}
	lines, err = OwnerCodeReport(ctx, f.admin, r.Plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "public.visit: the login is a superuser") || !strings.Contains(lines[0], "constraint by_owner calls public.not_dba(text)") {
		t.Fatalf("report as a superuser:\n%s", strings.Join(lines, "\n"))
	}
}
