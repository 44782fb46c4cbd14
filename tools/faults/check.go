package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// finalState is what the table must look like at the end of a trial.
type finalState int

const (
	stateApplied     finalState = iota // encrypted beside the plaintext
	stateCleaned                       // plaintext dropped and purged
	stateRolledBack                    // the original table
	stateReencrypted                   // applied, every ciphertext under the active data key
)

func (s finalState) String() string {
	return [...]string{"applied", "cleaned", "rolled back", "re-encrypted"}[s]
}

// verifyLine is the summary line of `pgphi verify`.
var verifyLine = regexp.MustCompile(`verified (\d+) values in (\d+) rows in [^:]*: (\d+) mismatches, (\d+) rows pending`)

// parseVerify returns the rows, mismatches and pending rows verify reported.
func parseVerify(stdout string) (rows, mismatches, pending int64, ok bool) {
	m := verifyLine.FindStringSubmatch(stdout)
	if m == nil {
		return 0, 0, 0, false
	}
	rows, _ = strconv.ParseInt(m[2], 10, 64)
	mismatches, _ = strconv.ParseInt(m[3], 10, 64)
	pending, _ = strconv.ParseInt(m[4], 10, 64)
	return rows, mismatches, pending, true
}

// checkState checks the table after the writer stopped.
func (t *trial) checkState(ctx context.Context, state finalState) {
	want := int64(-1)
	if t.w != nil {
		want = t.w.expectedRows()
	}
	if state == stateApplied || state == stateReencrypted {
		// The writer's last changes, made while the successful run ended,
		// are caught up by one more apply, as an operator would.
		if r := t.run(ctx, "apply-final", nil, "apply"); r.code != 0 {
			t.fail("the final pgphi apply after the writer stopped: %s", r.summary())
		}
	}
	if state != stateRolledBack {
		t.checkVerify(ctx, want)
	}
	conn, err := t.e.connect(ctx, t.db)
	if err != nil {
		t.fail("connecting for the checks: %v", err)
		return
	}
	defer conn.Close(context.Background())
	check := func(what string, q string, wantN int64, args ...any) {
		n, err := queryInt(ctx, conn, q, args...)
		switch {
		case err != nil:
			t.fail("%s: %v", what, err)
		case n != wantN:
			t.fail("%s: %d, want %d", what, n, wantN)
		}
	}
	if want >= 0 {
		check("rows in patient", "SELECT count(*) FROM patient", want)
	}
	cols, err := columnsOf(ctx, conn)
	if err != nil {
		t.fail("reading the columns: %v", err)
		return
	}
	pool := t.e.base.pool
	if state == stateReencrypted {
		t.checkKeys(ctx, conn)
	}
	switch state {
	case stateApplied, stateReencrypted:
		var incomplete []string
		for _, c := range phiColumns {
			id := pgx.Identifier{c}.Sanitize()
			incomplete = append(incomplete, fmt.Sprintf("(%s IS NOT NULL AND (%s IS NULL OR %s IS NULL))", id,
				pgx.Identifier{c + "_encrypted"}.Sanitize(), pgx.Identifier{c + "_bidx"}.Sanitize()))
		}
		check("rows with a plaintext but no ciphertext or no blind index terms", "SELECT count(*) FROM patient WHERE "+strings.Join(incomplete, " OR "), 0)
		check("rows left marked pending", "SELECT count(*) FROM patient WHERE pgphi_pending", 0)
		check("backfill chunks not done", "SELECT count(*) FROM pgphi.chunks WHERE NOT done", 0)
		check("invalid indexes on patient", "SELECT count(*) FROM pg_index WHERE indrelid = 'patient'::regclass AND NOT indisvalid", 0)
		t.checkUntouched(ctx, conn, t.e.base.columns, t.e.base.fullMD5, "every column")
		t.checkTouched(ctx, conn, true)
	case stateCleaned:
		for _, c := range phiColumns {
			if cols[c] {
				t.fail("plaintext column %s still exists after cleanup", c)
			}
			if !cols[c+"_encrypted"] {
				t.fail("ciphertext column %s_encrypted missing after cleanup", c)
			}
		}
		if cols["pgphi_pending"] {
			t.fail("marker column pgphi_pending still exists after cleanup")
		}
		check("triggers on patient after cleanup", "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'patient'::regclass AND NOT tgisinternal", 0)
		check("protected columns not cleaned or not purged", "SELECT count(*) FROM pgphi.protected_columns WHERE phase <> 'cleaned' OR purged_at IS NULL", 0)
		check("migration_complete off after cleanup", "SELECT (NOT pgphi.flag('migration_complete'))::int", 0)
		check("pg_repack leftovers (tables in schema repack)", "SELECT count(*) FROM pg_tables WHERE schemaname = 'repack'", 0)
		t.checkUntouched(ctx, conn, unprotected(t.e.base.columns), t.e.base.restMD5, "the unprotected columns")
		got, err := nonNullCounts(ctx, conn, "_encrypted", pool)
		if err != nil {
			t.fail("counting ciphertexts: %v", err)
		}
		for _, c := range phiColumns {
			if err == nil && got[c] != t.e.base.nonNull[c] {
				t.fail("%s_encrypted: %d ciphertexts in untouched rows, want %d (their non-NULL plaintexts)", c, got[c], t.e.base.nonNull[c])
			}
		}
		t.checkTouched(ctx, conn, false)
		t.checkSearch(ctx)
	case stateRolledBack:
		for c := range cols {
			if strings.HasSuffix(c, "_encrypted") || strings.HasSuffix(c, "_bidx") || strings.HasPrefix(c, "pgphi") {
				t.fail("column %s left on patient after rollback", c)
			}
		}
		for _, c := range phiColumns {
			if !cols[c] {
				t.fail("plaintext column %s missing after rollback", c)
			}
		}
		check("triggers on patient after rollback", "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'patient'::regclass AND NOT tgisinternal", 0)
		check("indexes on patient after rollback", "SELECT count(*) FROM pg_index WHERE indrelid = 'patient'::regclass", t.e.base.indexes)
		check("flags on after rollback", "SELECT (pgphi.flag('use_encrypted_search') OR pgphi.flag('require_encryption') OR pgphi.flag('migration_complete'))::int", 0)
		if !t.failedSoFar() {
			t.checkUntouched(ctx, conn, t.e.base.columns, t.e.base.fullMD5, "every column")
			t.checkTouched(ctx, conn, true)
		}
	}
}

func (t *trial) failedSoFar() bool { return len(t.failures) > 0 }

// rotations is the number of `keys rotate` runs the trial started.
func (t *trial) rotations() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, r := range t.runs {
		if len(r.args) > 1 && r.args[0] == "keys" && r.args[1] == "rotate" {
			n++
		}
	}
	return n
}

// checkKeys: after a re-encryption every ciphertext's header names the
// active data key, and a resumed run rotated no further than one key per
// run that started.
func (t *trial) checkKeys(ctx context.Context, conn *pgx.Conn) {
	active, err := queryInt(ctx, conn, "SELECT key_id FROM pgphi.data_keys WHERE state = 'active'")
	if err != nil {
		t.fail("reading the active data key: %v", err)
		return
	}
	var stale []string
	for _, c := range phiColumns {
		stale = append(stale, fmt.Sprintf("(%[1]s IS NOT NULL AND substr(%[1]s, 2, 4) <> int4send($1::int))::int", pgx.Identifier{c + "_encrypted"}.Sanitize()))
	}
	n, err := queryInt(ctx, conn, "SELECT COALESCE(sum("+strings.Join(stale, " + ")+"), 0)::bigint FROM patient", active)
	switch {
	case err != nil:
		t.fail("counting ciphertexts under another key: %v", err)
	case n != 0:
		t.fail("%d ciphertexts are under another data key than the active one (%d)", n, active)
	default:
		t.note("every ciphertext is under the active data key %d", active)
	}
	if runs := t.rotations(); active < 2 || active > int64(1+runs) {
		t.fail("active data key %d after %d runs of keys rotate --reencrypt from key 1", active, runs)
	}
}

// checkVerify runs `pgphi verify`: exit 0, no mismatch, nothing pending,
// and every row counted.
func (t *trial) checkVerify(ctx context.Context, want int64) {
	r := t.run(ctx, "verify", nil, "verify")
	if r.code != 0 {
		t.fail("pgphi verify: %s", r.summary())
		return
	}
	rows, mism, pend, ok := parseVerify(r.stdout)
	switch {
	case !ok:
		t.fail("pgphi verify does not say how many rows it checked")
	case mism != 0 || pend != 0:
		t.fail("pgphi verify exited 0 with %d mismatches and %d pending rows", mism, pend)
	case want >= 0 && rows != want:
		t.fail("pgphi verify checked %d rows, the table must have %d", rows, want)
	}
}

// checkUntouched compares the rows the writer never touched with the
// original data.
func (t *trial) checkUntouched(ctx context.Context, conn *pgx.Conn, cols []string, want, what string) {
	got, err := untouchedMD5(ctx, conn, cols, t.e.base.pool)
	switch {
	case err != nil:
		t.fail("digest of the untouched rows: %v", err)
	case got != want:
		t.fail("%s of the rows the writer never touched differ from the original data (md5 mismatch)", what)
	}
}

// checkTouched compares the rows the writer touched with what it last
// wrote (values when plaintext exists, else only presence).
func (t *trial) checkTouched(ctx context.Context, conn *pgx.Conn, values bool) {
	if t.w == nil {
		return
	}
	var keys []string
	for k := range t.w.expect {
		keys = append(keys, k)
	}
	for k := range t.w.gone {
		keys = append(keys, k)
	}
	var got map[string]rowVals
	var err error
	if values {
		got, err = readVals(ctx, conn, keys)
	} else {
		got, err = presentKeys(ctx, conn, keys)
	}
	if err != nil {
		t.fail("reading the written rows: %v", err)
		return
	}
	missing, wrong, resurrected := 0, 0, 0
	for k, v := range t.w.expect {
		g, ok := got[k]
		switch {
		case !ok:
			missing++
		case values && !g.equal(v):
			wrong++
		}
	}
	for k := range t.w.gone {
		if _, ok := got[k]; ok {
			resurrected++
		}
	}
	if missing > 0 {
		t.fail("%d rows the application wrote (or left alone) are missing", missing)
	}
	if wrong > 0 {
		t.fail("%d rows the application wrote do not hold what it last wrote", wrong)
	}
	if resurrected > 0 {
		t.fail("%d rows the application deleted are back", resurrected)
	}
}

// presentKeys returns the keys that have a row (with empty values).
func presentKeys(ctx context.Context, conn *pgx.Conn, keys []string) (map[string]rowVals, error) {
	rows, err := conn.Query(ctx, "SELECT uid FROM patient WHERE uid = ANY($1)", keys)
	if err != nil {
		return nil, err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := map[string]rowVals{}
	for _, k := range found {
		out[k] = rowVals{}
	}
	return out, nil
}

// checkSearch looks up three planted last names through pgphi search after
// cleanup: each must find exactly its row.
func (t *trial) checkSearch(ctx context.Context) {
	keys := t.e.base.canaryKeys
	for i := 0; i < 3; i++ {
		k := keys[t.rng.IntN(len(keys))]
		r := t.run(ctx, "search", nil, "search", "patient", "last_name", "--exact", t.e.base.canaryLast[k], "--reason", "fault campaign check")
		if r.code != 0 {
			t.fail("pgphi search after cleanup: %s", r.summary())
			continue
		}
		if got := strings.Fields(r.stdout); !slices.Equal(got, []string{k}) {
			t.fail("pgphi search --exact of a planted last name found %d keys, want exactly its row", len(got))
		}
	}
}
