package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// The review's data-loss attack: an application update that changes only a
// ciphertext (a valid envelope copied from another row) leaves the row
// unmarked, and a verification row claiming success is forged; cleanup then
// dropped the plaintext of a row whose ciphertext was wrong. Cleanup now
// verifies every value itself and trusts no recorded verification: it
// refuses, naming the row, and drops nothing.
func TestCleanupDoesNotTrustARecordedVerification(t *testing.T) {
	ctx := context.Background()
	f := setup(t, lifecycleDDL, lifecycleConfig)
	f.apply(t)
	f.cutOver(t)
	for _, sql := range []string{
		// A well-formed ciphertext of another row (it passes the header
		// CHECK; only decryption under this row's binding fails).
		"UPDATE public.patient SET last_name_encrypted = (SELECT last_name_encrypted FROM public.patient WHERE uid = 'u00002') WHERE uid = 'u00001'",
		// A forged verification (written here by a superuser; no pgphi role
		// can write one) that passed and began in the future.
		`INSERT INTO pgphi.verifications (plan_id, started_at, finished_at, ok, rows_checked, values_checked, mismatches, pending, write_counter, snapshot_xmin, recorded_by)
		 VALUES ('` + f.plan.ID + `', now(), now(), true, 3000, 99999, 0, 0, 1e12, 1e12, 'pgphi_dba')`,
	} {
		if _, err := f.pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	err := f.runner.Cleanup(ctx, f.plan.ID, CleanupOptions{Purge: "vacuum-full"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "u00001") {
		t.Fatalf("cleanup with a wrong ciphertext and a forged verification: %v (want refused, naming u00001)", err)
	}
	var plain string
	if err := f.pool.QueryRow(ctx, "SELECT last_name FROM public.patient WHERE uid = 'u00001'").Scan(&plain); err != nil || plain != "last1" {
		t.Fatalf("the plaintext of u00001 after the refused cleanup: %q, %v", plain, err)
	}
	// The refusal is itself recorded as a failed verification by pgphi.
	var ok bool
	var by string
	if err := f.pool.QueryRow(ctx, "SELECT ok, recorded_by FROM pgphi.verifications WHERE recorded_by IS NOT NULL AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1").Scan(&ok, &by); err != nil || ok {
		t.Fatalf("last verification: ok=%v by=%q err=%v", ok, by, err)
	}
}

// Row-level security could hide rows from a verification, which then
// passed on fewer rows, and cleanup would drop plaintext it never verified.
// pgphi's sessions run with row_security off: a read that policies would
// filter fails instead. The dba (a member of the owner) reads as the owner,
// whom policies do not bind; under FORCE ROW LEVEL SECURITY they bind the
// owner too, and verify fails rather than pass on what it could see.
func TestRowSecurityCannotHideRowsFromVerification(t *testing.T) {
	ctx := context.Background()
	f := ownerSetup(t, `CREATE TABLE public.visit (id int PRIMARY KEY, note text);
		INSERT INTO public.visit SELECT g, 'note ' || g FROM generate_series(1, 300) g;
		ALTER TABLE public.visit ENABLE ROW LEVEL SECURITY;
		CREATE POLICY only_some ON public.visit USING (id <= 100);`, ownerCodeConfig)
	r := f.runner(t, f.dba)
	if err := r.Apply(ctx); err != nil {
		t.Fatalf("apply by the dba (reading as the owner): %v", err)
	}
	res, err := Verify(ctx, f.dba, r.Keys, r.Plan, 0)
	if err != nil || res.Rows != 300 || !res.OK() {
		t.Fatalf("verify as the owner: rows %v, err %v", res, err)
	}
	if _, err := f.owner.Exec(ctx, "ALTER TABLE public.visit FORCE ROW LEVEL SECURITY"); err != nil {
		t.Fatal(err)
	}
	res, err = Verify(ctx, f.dba, r.Keys, r.Plan, 0)
	if err == nil && res.Rows < 300 {
		t.Fatalf("verify passed on %d of 300 rows under a policy", res.Rows)
	}
	if err == nil || !strings.Contains(err.Error(), "row-level security") {
		t.Fatalf("verify under FORCE ROW LEVEL SECURITY: %v (want a row-level security error)", err)
	}
	for _, fl := range []string{FlagUseEncryptedSearch, FlagRequireEncryption} {
		if err := SetFlag(ctx, f.dba, fl, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Cleanup(ctx, r.Plan.ID, CleanupOptions{Purge: "vacuum-full"}); err == nil {
		t.Fatal("cleanup ran on a table whose rows a policy hides")
	}
	var n int
	if err := f.admin.QueryRow(ctx, "SELECT count(note) FROM public.visit").Scan(&n); err != nil || n != 300 {
		t.Fatalf("plaintext after the refused cleanup: %d values (%v)", n, err)
	}
}
