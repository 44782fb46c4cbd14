package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
)

// Attack tests of the trigger. None of them
// is parallel: NewActors shares the pgphi group roles cluster-wide.

// triggerFixture is setup plus the attack's login roles and a superuser
// connection with the application's default search_path.
func triggerFixture(t *testing.T, ddl, cfg string) (*fixture, *pgtest.Actors, *pgx.Conn) {
	t.Helper()
	f := setup(t, ddl, cfg)
	url := f.pool.Config().ConnString()
	return f, pgtest.NewActors(t, url), pgtest.Connect(t, url)
}

func mustExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// sqlState is the SQLSTATE of err, or "" when it is not a server error.
func sqlState(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

func (f *fixture) triggerProblems(t *testing.T) []TriggerProblem {
	t.Helper()
	probs, err := CheckTriggers(context.Background(), f.pool, f.plan)
	if err != nil {
		t.Fatal(err)
	}
	return probs
}

func hasProblem(probs []TriggerProblem, object, problem string) bool {
	for _, p := range probs {
		if strings.Contains(p.Object, object) && strings.Contains(p.Problem, problem) {
			return true
		}
	}
	return false
}

func isSuperuser(t *testing.T, c *pgx.Conn, role string) bool {
	t.Helper()
	var super bool
	if err := c.QueryRow(context.Background(), "SELECT rolsuper FROM pg_roles WHERE rolname = $1", role).Scan(&super); err != nil {
		t.Fatal(err)
	}
	return super
}

const moodDDL = `
CREATE TYPE public.mood AS ENUM ('calm', 'upset');
CREATE TYPE public.pain AS ENUM ('none', 'some');
CREATE TABLE public.p (uid text PRIMARY KEY, nm text, m public.mood, pn public.pain, other int);
INSERT INTO public.p SELECT 'u' || g, 'n' || g, 'calm', 'none', g FROM generate_series(1, 20) g;
CREATE TABLE public.loot (who text);`

const moodConfig = "version: 1\ntables:\n  p:\n    columns:\n      nm: { class: pii }\n      m: { class: phi }\n      pn: { class: phi }\n"

// The application owner defines a cast to text on the type of a protected
// column that makes it superuser (or writes to a table only it may write),
// and waits for the writer's ordinary UPDATE or INSERT to fire pgphi's
// trigger. The mark function runs as the writer: the cast gains nothing.
func TestTriggerCastRunsWithTheWritersRights(t *testing.T) {
	ctx := context.Background()
	f, a, adm := triggerFixture(t, moodDDL, moodConfig)
	f.apply(t)
	for _, s := range []string{
		"ALTER TABLE public.p OWNER TO " + ident(a.AppOwner),
		"ALTER TYPE public.mood OWNER TO " + ident(a.AppOwner),
		"ALTER TYPE public.pain OWNER TO " + ident(a.AppOwner),
		"ALTER TABLE public.loot OWNER TO " + ident(a.AppOwner),
	} {
		mustExec(t, adm, s)
	}
	var definer bool
	if err := adm.QueryRow(ctx, "SELECT prosecdef FROM pg_proc WHERE oid = $1::regprocedure", f.plan.Tables[0].markFunctionIdent()+"()").Scan(&definer); err != nil || definer {
		t.Fatalf("mark function SECURITY DEFINER: %v, %v", definer, err)
	}

	owner := a.Connect(t, a.AppOwner)
	mustExec(t, owner, "GRANT SELECT, INSERT, UPDATE ON public.p TO "+ident(a.AppWriter))
	mustExec(t, owner, fmt.Sprintf(`CREATE FUNCTION public.mood_text(public.mood) RETURNS text LANGUAGE plpgsql AS $$
		BEGIN ALTER ROLE %s SUPERUSER; RETURN pg_catalog.textin(pg_catalog.enum_out($1)); END $$`, ident(a.AppOwner)))
	mustExec(t, owner, "CREATE CAST (public.mood AS text) WITH FUNCTION public.mood_text(public.mood)")
	mustExec(t, owner, `CREATE FUNCTION public.pain_text(public.pain) RETURNS text LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO public.loot VALUES (current_user); RETURN pg_catalog.textin(pg_catalog.enum_out($1)); END $$`)
	mustExec(t, owner, "CREATE CAST (public.pain AS text) WITH FUNCTION public.pain_text(public.pain)")

	writer := a.Connect(t, a.AppWriter)
	_, err := writer.Exec(ctx, "UPDATE public.p SET nm = 'changed' WHERE uid = 'u1'")
	if err == nil || sqlState(err) != "42501" {
		t.Fatalf("writer's update with the owner's escalating cast: %v (want permission denied: the cast ran as the writer)", err)
	}
	if isSuperuser(t, adm, a.AppOwner) {
		t.Fatal("the application owner became superuser through pgphi's trigger")
	}
	// Variant: another column's type, a cast that writes where only its
	// owner may, fired by a key change.
	mustExec(t, owner, "DROP CAST (public.mood AS text)")
	_, err = writer.Exec(ctx, "UPDATE public.p SET uid = 'u4b' WHERE uid = 'u4'")
	if err == nil || sqlState(err) != "42501" {
		t.Fatalf("writer's key change with the owner's writing cast: %v (want permission denied)", err)
	}
	var loot int
	if err := adm.QueryRow(ctx, "SELECT count(*) FROM public.loot").Scan(&loot); err != nil || loot != 0 {
		t.Fatalf("the cast wrote %d rows with rights the writer does not have (%v)", loot, err)
	}
	// The owner's own update runs the cast as the owner: nothing gained.
	mustExec(t, owner, "UPDATE public.p SET nm = 'mine' WHERE uid = 'u2'")
	var others int
	if err := adm.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE who <> $1) FROM public.loot", a.AppOwner).Scan(&loot, &others); err != nil || loot == 0 || others != 0 {
		t.Fatalf("the owner's own update: the cast ran %d times, %d times as another role (%v)", loot, others, err)
	}
}

// A healthcare admin builds a temporary table shaped like a protected one,
// with an enum whose cast to text escalates, and attaches pgphi's mark
// function to it: refused, the function is not executable by PUBLIC (nor by
// any pgphi group but its owner).
func TestMarkFunctionCannotBeAttachedByAnotherRole(t *testing.T) {
	ctx := context.Background()
	f, a, adm := triggerFixture(t, moodDDL, moodConfig)
	f.apply(t)
	fn := f.plan.Tables[0].markFunctionIdent()
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer, a.AppOwner, a.Outsider} {
		c := a.Connect(t, role)
		mustExec(t, c, "CREATE TYPE pg_temp.e AS ENUM ('a')")
		mustExec(t, c, `CREATE FUNCTION pg_temp.e_text(pg_temp.e) RETURNS text LANGUAGE plpgsql AS $$
			BEGIN ALTER ROLE CURRENT_USER SUPERUSER; RETURN 'a'; END $$`)
		mustExec(t, c, "CREATE TEMP TABLE p (uid text PRIMARY KEY, nm text, m pg_temp.e, pn pg_temp.e, other int, pgphi_pending boolean, nm_encrypted bytea, m_encrypted bytea, pn_encrypted bytea)")
		_, err := c.Exec(ctx, "CREATE TRIGGER t BEFORE INSERT OR UPDATE ON pg_temp.p FOR EACH ROW EXECUTE FUNCTION "+fn+"()")
		if err == nil || sqlState(err) != "42501" {
			t.Fatalf("%s attached pgphi's mark function to its own table: %v", role, err)
		}
		var can bool
		if err := adm.QueryRow(ctx, "SELECT has_function_privilege($1, $2, 'EXECUTE')", role, fn+"()").Scan(&can); err != nil || can {
			t.Fatalf("%s may execute the mark function: %v %v", role, can, err)
		}
		if isSuperuser(t, adm, role) {
			t.Fatalf("%s became superuser", role)
		}
	}
}

const collationDDL = `
CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE public.c (k text COLLATE public.ci PRIMARY KEY, nm text COLLATE public.ci, other int);
INSERT INTO public.c VALUES ('abc', 'Smith', 1), ('def', 'Jones', 2), ('ghi', 'Brown', 3);`

const collationConfig = "version: 1\ntables:\n  c:\n    columns:\n      nm: { class: pii }\n"

// Under a nondeterministic (case-insensitive) collation, abc = ABC: the
// trigger compares keys and values byte for byte (COLLATE "C"), so a key
// change by case does not leave a ciphertext bound to the old key, and a
// value changed by case is neither left stale nor let through while
// require_encryption is on.
func TestTriggerComparesCaseChangesUnderNondeterministicCollations(t *testing.T) {
	ctx := context.Background()
	f, a, adm := triggerFixture(t, collationDDL, collationConfig)
	f.apply(t)
	mustExec(t, adm, "GRANT SELECT, INSERT, UPDATE ON public.c TO "+ident(a.AppWriter))
	writer := a.Connect(t, a.AppWriter)

	mustExec(t, writer, "UPDATE public.c SET k = 'ABC' WHERE k = 'abc'")
	var cleared, pending bool
	if err := adm.QueryRow(ctx, "SELECT nm_encrypted IS NULL, pgphi_pending FROM public.c WHERE k = 'ABC' COLLATE \"C\"").Scan(&cleared, &pending); err != nil || !cleared || !pending {
		t.Fatalf("key abc -> ABC: ciphertext cleared %v, row marked %v (%v)", cleared, pending, err)
	}
	mustExec(t, writer, "UPDATE public.c SET nm = 'JONES' WHERE k = 'def'")
	if err := adm.QueryRow(ctx, "SELECT nm_encrypted IS NULL, pgphi_pending FROM public.c WHERE k = 'def'").Scan(&cleared, &pending); err != nil || !cleared || !pending {
		t.Fatalf("Jones -> JONES: ciphertext cleared %v, row marked %v (%v)", cleared, pending, err)
	}
	f.apply(t)
	if res := f.verify(t); !res.OK() || res.Values != 3 {
		t.Fatalf("after the case changes: %+v", res)
	}
	f.decryptAll(t, "public.c", "nm")

	if err := SetFlag(ctx, f.pool, FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"UPDATE public.c SET nm = 'SMITH' WHERE k = 'abc'",
		"UPDATE public.c SET nm = 'brown' WHERE k = 'ghi'",
		"INSERT INTO public.c (k, nm) VALUES ('jkl', 'White')",
	} {
		if _, err := writer.Exec(ctx, q); err == nil || sqlState(err) != "42501" {
			t.Fatalf("%s with require_encryption on: %v (want refused)", q, err)
		}
	}
	// A ciphertext-only write is what the cut-over application does.
	mustExec(t, writer, "UPDATE public.c SET other = 7 WHERE k = 'ghi'")
	if res := f.verify(t); !res.OK() {
		t.Fatalf("after refused writes: %+v", res)
	}
}

// An application update that changes only a ciphertext column does not fire
// the mark trigger: the envelope CHECK refuses a value that is not a pgphi
// ciphertext (wrong version, key id 0, too short), as the writer role, on
// update and insert. A well-formed ciphertext of another row passes the
// CHECK and is caught by verification.
func TestCiphertextOnlyWritesAreChecked(t *testing.T) {
	ctx := context.Background()
	f, a, adm := triggerFixture(t, moodDDL, moodConfig)
	f.apply(t)
	mustExec(t, adm, "GRANT SELECT, INSERT, UPDATE ON public.p TO "+ident(a.AppWriter))
	if err := SetFlag(ctx, f.pool, FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	var good []byte
	if err := adm.QueryRow(ctx, "SELECT nm_encrypted FROM public.p WHERE uid = 'u2'").Scan(&good); err != nil {
		t.Fatal(err)
	}
	mod := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	bad := map[string][]byte{
		"version 2":    mod(func(b []byte) []byte { b[0] = 2; return b }),
		"key id 0":     mod(func(b []byte) []byte { b[1], b[2], b[3], b[4] = 0, 0, 0, 0; return b }),
		"too short":    good[:33],
		"garbage":      []byte(strings.Repeat("A", 64)),
		"empty":        {},
		"header alone": good[:5],
	}
	writer := a.Connect(t, a.AppWriter)
	for name, ct := range bad {
		if _, err := writer.Exec(ctx, "UPDATE public.p SET nm_encrypted = $1 WHERE uid = 'u1'", ct); sqlState(err) != "23514" {
			t.Fatalf("update with a %s ciphertext: %v (want check_violation)", name, err)
		}
		if _, err := writer.Exec(ctx, "INSERT INTO public.p (uid, m_encrypted) VALUES ('u77', $1)", ct); sqlState(err) != "23514" {
			t.Fatalf("insert with a %s ciphertext: %v (want check_violation)", name, err)
		}
	}
	// Well-formed but another row's: the CHECK lets it through, verification
	// (and cleanup's own, under its lock) does not.
	mustExec(t, writer, "UPDATE public.p SET nm_encrypted = $1 WHERE uid = 'u1'", good)
	if res := f.verify(t); res.Mismatches != 1 || res.OK() {
		t.Fatalf("another row's ciphertext: %+v", res)
	}
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("problems after a normal run: %v", probs)
	}
}

// An installation made by an older pgphi has a SECURITY DEFINER mark
// function executable by PUBLIC and no envelope checks; here its statement
// trigger is missing too.
// CheckTriggers names each; apply replaces them in place.
func TestApplyUpgradesAnOldDefinerMarkFunction(t *testing.T) {
	ctx := context.Background()
	f, _, adm := triggerFixture(t, moodDDL, moodConfig)
	f.apply(t)
	tg := f.plan.Tables[0]
	fn := tg.markFunctionIdent() + "()"
	for _, s := range []string{
		"DROP TRIGGER zz_pgphi_count ON public.p",
		"ALTER TABLE public.p DROP CONSTRAINT " + ident(tg.Columns[0].envelopeCheck()),
		"ALTER TABLE public.p DROP CONSTRAINT " + ident(tg.Columns[1].envelopeCheck()),
		"ALTER TABLE public.p DROP CONSTRAINT " + ident(tg.Columns[2].envelopeCheck()),
		"CREATE OR REPLACE FUNCTION " + fn + ` RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
		BEGIN
		  IF pgphi.flag('require_encryption') AND TG_OP = 'UPDATE' AND NEW.nm::text IS DISTINCT FROM OLD.nm::text THEN RAISE EXCEPTION 'refused'; END IF;
		  NEW.pgphi_pending := true;
		  RETURN NEW;
		END $$`,
		"GRANT EXECUTE ON FUNCTION " + fn + " TO PUBLIC",
		"COMMENT ON FUNCTION " + fn + " IS NULL",
	} {
		mustExec(t, adm, s)
	}
	probs := f.triggerProblems(t)
	for _, want := range [][2]string{
		{"function", "SECURITY DEFINER"}, {"function", "PUBLIC"}, {"function", "body differs"},
		{"trigger zz_pgphi_count", "missing"},
		{"constraint pgphi_envelope_nm", "missing"}, {"function", "definitions differ"},
	} {
		if !hasProblem(probs, want[0], want[1]) {
			t.Fatalf("old installation: no %q problem with %s in %v", want[1], want[0], probs)
		}
	}
	if res := f.verify(t); res.OK() {
		t.Fatal("verification passed over an old definer mark function")
	}
	f.apply(t)
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("after the upgrade: %v", probs)
	}
	if !strings.Contains(f.log.String(), "replacing pgphi's objects") {
		t.Fatalf("apply did not say it replaced the old objects:\n%s", f.log.String())
	}
	var definer, public bool
	if err := adm.QueryRow(ctx, "SELECT prosecdef, has_function_privilege('public', oid, 'EXECUTE') FROM pg_proc WHERE oid = $1::regprocedure", fn).Scan(&definer, &public); err != nil || definer || public {
		t.Fatalf("after the upgrade: definer %v, PUBLIC may execute %v (%v)", definer, public, err)
	}

	// Variant: an invoker function of an older version (its body without
	// this version's marker) is replaced too.
	var src string
	if err := adm.QueryRow(ctx, "SELECT prosrc FROM pg_proc WHERE oid = $1::regprocedure", fn).Scan(&src); err != nil {
		t.Fatal(err)
	}
	old := strings.Replace(src, fmt.Sprintf("version %d", markVersion), "version 1", 1)
	mustExec(t, adm, "CREATE OR REPLACE FUNCTION "+fn+" RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $pgphi$"+old+"$pgphi$")
	if !hasProblem(f.triggerProblems(t), "function", "body differs") {
		t.Fatal("an older version's body went unnoticed")
	}
	f.apply(t)
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("after the second upgrade: %v", probs)
	}
	if res := f.verify(t); !res.OK() {
		t.Fatalf("after the upgrades: %+v", res)
	}
}

// The table's owner switches require_encryption off by disabling, dropping
// or replacing pgphi's triggers, or weakens the envelope check: CheckTriggers,
// status and verify fail and name the object; apply puts it back.
func TestDisabledOrReplacedTriggersFailStatusAndVerify(t *testing.T) {
	ctx := context.Background()
	f, a, adm := triggerFixture(t, moodDDL, moodConfig)
	f.apply(t)
	mustExec(t, adm, "ALTER TABLE public.p OWNER TO "+ident(a.AppOwner))
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("after apply: %v", probs)
	}
	if err := SetFlag(ctx, f.pool, FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	owner := a.Connect(t, a.AppOwner)
	tg := f.plan.Tables[0]
	cases := []struct {
		name, attack, object, problem string
	}{
		{"disable", "ALTER TABLE public.p DISABLE TRIGGER zz_pgphi_mark", "trigger zz_pgphi_mark", "disabled"},
		{"disable all", "ALTER TABLE public.p DISABLE TRIGGER USER", "trigger zz_pgphi_count", "disabled"},
		{"replica only", "ALTER TABLE public.p ENABLE REPLICA TRIGGER zz_pgphi_mark_insert", "trigger zz_pgphi_mark_insert", "replica"},
		{"drop", "DROP TRIGGER zz_pgphi_count ON public.p", "trigger zz_pgphi_count", "missing"},
		{"replace", `CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
			DROP TRIGGER zz_pgphi_mark_insert ON public.p;
			CREATE TRIGGER zz_pgphi_mark_insert BEFORE INSERT ON public.p FOR EACH ROW EXECUTE FUNCTION public.noop()`,
			"trigger zz_pgphi_mark_insert", "not pgphi's function"},
		{"weaken check", fmt.Sprintf("ALTER TABLE public.p DROP CONSTRAINT %[1]s; ALTER TABLE public.p ADD CONSTRAINT %[1]s CHECK (nm_encrypted IS NOT NULL OR true) NOT VALID",
			ident(tg.Columns[0].envelopeCheck())), "function", "definitions differ"},
		{"drop check", "ALTER TABLE public.p DROP CONSTRAINT " + ident(tg.Columns[1].envelopeCheck()), "constraint pgphi_envelope_m", "missing"},
	}
	for _, c := range cases {
		mustExec(t, owner, c.attack)
		probs := f.triggerProblems(t)
		if !hasProblem(probs, c.object, c.problem) {
			t.Fatalf("%s: no %q problem with %s in %v", c.name, c.problem, c.object, probs)
		}
		st, err := GetStatus(ctx, f.pool, f.plan)
		if err != nil || len(st.Triggers) == 0 || st.Complete {
			t.Fatalf("%s: status %+v, %v", c.name, st, err)
		}
		if res := f.verify(t); res.OK() || len(res.Triggers) == 0 {
			t.Fatalf("%s: verification passed: %+v", c.name, res)
		}
		f.apply(t)
		if probs := f.triggerProblems(t); len(probs) != 0 {
			t.Fatalf("%s: apply did not put everything back: %v", c.name, probs)
		}
	}
	// ENABLE ALWAYS fires in every mode: not a problem.
	mustExec(t, owner, "ALTER TABLE public.p ENABLE ALWAYS TRIGGER zz_pgphi_mark")
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("ENABLE ALWAYS: %v", probs)
	}
	// The writer's trigger reads require_encryption through pgphi.flag:
	// a schema every role cannot reach is reported too (and apply, which
	// locks the schema down again, restores it).
	mustExec(t, adm, "REVOKE USAGE ON SCHEMA pgphi FROM PUBLIC")
	if !hasProblem(f.triggerProblems(t), "pgphi.flag", "not reachable") {
		t.Fatal("pgphi.flag out of the writer's reach went unnoticed")
	}
	f.apply(t)
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("after apply: %v", probs)
	}
	// What a disabled trigger let through is found by verification too.
	mustExec(t, adm, "GRANT SELECT, INSERT, UPDATE ON public.p TO "+ident(a.AppWriter))
	mustExec(t, owner, "ALTER TABLE public.p DISABLE TRIGGER zz_pgphi_mark, DISABLE TRIGGER zz_pgphi_count")
	mustExec(t, a.Connect(t, a.AppWriter), "UPDATE public.p SET nm = 'plaintext after cutover' WHERE uid = 'u3'")
	if res := f.verify(t); res.Mismatches != 1 || len(res.Triggers) != 2 {
		t.Fatalf("writes while disabled: %+v", res)
	}
}

// A table with inheritance parents or children, a partitioned table and a
// partition are refused at plan time, naming the table; a child attached
// after apply is reported by CheckTriggers and refused by the next apply.
func TestPartitionedAndInheritedTablesAreRefused(t *testing.T) {
	ctx := context.Background()
	f := setup(t, `
		CREATE TABLE public.plain (id int PRIMARY KEY, nm text);
		INSERT INTO public.plain SELECT g, 'n' || g FROM generate_series(1, 30) g;
		CREATE TABLE public.par (id int PRIMARY KEY, nm text);
		CREATE TABLE public.kid (PRIMARY KEY (id)) INHERITS (public.par);
		CREATE TABLE public.pt (id int PRIMARY KEY, nm text) PARTITION BY RANGE (id);
		CREATE TABLE public.pt1 PARTITION OF public.pt FOR VALUES FROM (0) TO (1000);`,
		"version: 1\ntables:\n  plain:\n    columns:\n      nm: { class: pii }\n")
	for table, why := range map[string]string{
		"par": "has inheritance children", "kid": "inherits from another table",
		"pt": "is a partitioned table", "pt1": "is a partition",
	} {
		cfg, err := config.Parse("pgphi.yaml", []byte("version: 1\ntables:\n  "+table+":\n    columns:\n      nm: { class: pii }\n"))
		if err != nil {
			t.Fatal(err)
		}
		tables, err := catalog.Resolve(ctx, f.pool, cfg)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		err = CheckTableShapes(ctx, f.pool, cfg, tables)
		if err == nil || !strings.Contains(err.Error(), "public."+table+" "+why) || !strings.Contains(err.Error(), "not supported") {
			t.Fatalf("%s: %v", table, err)
		}
	}
	f.apply(t)
	adm := pgtest.Connect(t, f.pool.Config().ConnString())
	mustExec(t, adm, "CREATE TABLE public.plain_kid () INHERITS (public.plain)")
	if !hasProblem(f.triggerProblems(t), "table", "has inheritance children") {
		t.Fatal("a child attached after apply went unnoticed")
	}
	err := f.runner.Apply(ctx)
	if err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("apply over an inheritance parent: %v", err)
	}
}

// The real arrangement: `roles init` gives schema pgphi to the dba group, a
// member of it runs apply on tables the application owner owns. The mark
// function ends up owned by the schema's owner, SECURITY INVOKER and not
// executable by PUBLIC, and the writer, with no grant on schema pgphi,
// writes through it.
func TestExpandByADBAMember(t *testing.T) {
	ctx := context.Background()
	f, a, adm := triggerFixture(t, moodDDL, moodConfig)
	mustExec(t, adm, "ALTER TABLE public.p OWNER TO "+ident(a.AppOwner))
	if _, err := policy.InitRoles(ctx, f.pool, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	pool, err := dbconn.Open(ctx, a.URL(a.DBA), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r := &Runner{Pool: pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: &syncWriter{b: f.log}}
	if err := r.Apply(ctx); err != nil {
		t.Fatalf("apply by a dba member: %v\n%s", err, f.log.String())
	}
	if probs := f.triggerProblems(t); len(probs) != 0 {
		t.Fatalf("after apply by a dba member: %v", probs)
	}
	var owner string
	if err := adm.QueryRow(ctx, "SELECT proowner::regrole::text FROM pg_proc WHERE oid = $1::regprocedure", f.plan.Tables[0].markFunctionIdent()+"()").Scan(&owner); err != nil || owner != pgtest.GroupDBA {
		t.Fatalf("mark function owned by %q (%v), want %s", owner, err, pgtest.GroupDBA)
	}
	owner2 := a.Connect(t, a.AppOwner)
	mustExec(t, owner2, "GRANT SELECT, INSERT, UPDATE ON public.p TO "+ident(a.AppWriter))
	writer := a.Connect(t, a.AppWriter)
	mustExec(t, writer, "UPDATE public.p SET nm = 'changed' WHERE uid = 'u1'")
	mustExec(t, writer, "INSERT INTO public.p (uid, nm) VALUES ('u100', 'new')")
	var pending int
	if err := adm.QueryRow(ctx, "SELECT count(*) FROM public.p WHERE pgphi_pending").Scan(&pending); err != nil || pending != 2 {
		t.Fatalf("writer's writes marked %d rows (%v), want 2", pending, err)
	}
	if err := SetFlag(ctx, pool, FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Exec(ctx, "UPDATE public.p SET nm = 'again' WHERE uid = 'u2'"); sqlState(err) != "42501" || !strings.Contains(err.Error(), "require_encryption") {
		t.Fatalf("plaintext write after cutover, as the writer: %v", err)
	}
}
