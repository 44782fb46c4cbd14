package pgphi_test

import (
	"context"
	"testing"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
)

// Under Within, a call's statements and audit record run in the caller's
// transaction: as the role the caller set, committed or rolled back with it.
func TestWithinRunsInTheCallersTransaction(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	actors := pgtest.NewActors(t, f.url)
	if _, err := policy.InitRoles(ctx, f.pool, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	client, err := pgphi.Open(ctx, f.pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	var ct []byte
	if err := f.pool.QueryRow(ctx, "SELECT last_name_encrypted FROM public.patient WHERE uid = 'P1'").Scan(&ct); err != nil {
		t.Fatal(err)
	}
	head := func() (seq int64, role, actor string) {
		f.pool.QueryRow(ctx, "SELECT seq, record->'actor'->>'db_role', record->'actor'->>'name' FROM pgphi.audit_log ORDER BY seq DESC LIMIT 1").Scan(&seq, &role, &actor)
		return
	}
	run := func(commit bool) error {
		tx, err := f.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true)", actors.HealthcareAdmin); err != nil {
			t.Fatal(err)
		}
		out, err := client.DecryptAll(pgphi.Within(ctx, tx, "ward-3"), "patient", "last_name", "chart review",
			[]pgphi.Sealed{{Key: pgphi.Key{"uid": "P1"}, Ciphertext: ct}})
		if err != nil {
			return err
		}
		if out[0].Text != "Smith" {
			t.Fatalf("decrypted %q", out[0].Text)
		}
		if commit {
			return tx.Commit(ctx)
		}
		return nil
	}
	before, _, _ := head()
	if err := run(false); err != nil {
		t.Fatal(err)
	}
	if seq, _, _ := head(); seq != before {
		t.Fatalf("a rolled-back call left record %d", seq)
	}
	if err := run(true); err != nil {
		t.Fatal(err)
	}
	seq, role, actor := head()
	if seq != before+1 || role != actors.HealthcareAdmin || actor != "ward-3" {
		t.Fatalf("record %d: role %s, actor %s", seq, role, actor)
	}
	// A role that may not append records is refused inside the caller's
	// transaction too.
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true)", actors.AppWriter); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DecryptAll(pgphi.Within(ctx, tx, "x"), "patient", "last_name", "r", []pgphi.Sealed{{Key: pgphi.Key{"uid": "P1"}, Ciphertext: ct}}); err == nil {
		t.Fatal("the application writer's role wrote an audit record")
	}
}
