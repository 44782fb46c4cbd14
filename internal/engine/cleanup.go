package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrRefused marks a lifecycle step that policy refuses (exit code 4).
var ErrRefused = errors.New("refused")

// CleanupOptions tune cleanup.
type CleanupOptions struct {
	Rename bool // rename <col>_encrypted to <col> once the plaintext is gone
	// Purge chooses how old row versions are rewritten: "auto" (pg_repack
	// when usable, else VACUUM FULL if VacuumFull allows it, else refused),
	// "repack", "vacuum-full" (see ChoosePurge).
	Purge string
	// VacuumFull lets "auto" fall back to VACUUM FULL, which locks each table
	// for its whole rewrite, when pg_repack cannot be used.
	VacuumFull bool
}

// VerifyMark is where a verification began.
type VerifyMark struct {
	ID      int64 // row of pgphi.verifications; 0 when not recorded
	Started time.Time
	// SnapshotXmin is the xmin of a snapshot taken before the verification
	// read anything: every transaction below it had ended, so the
	// verification saw its writes. Rows written at or after it are the ones
	// cleanup checks again.
	SnapshotXmin uint64
	// Counter is pgphi.write_seq, advanced once per writing statement on a
	// protected table: how much the application wrote since, for the record.
	Counter float64
}

// MarkVerification is called just before Verify. It opens the verification's
// record through pgphi.verification_begin, which sets who, when and where
// itself: no role can write pgphi.verifications directly.
func MarkVerification(ctx context.Context, r *Runner) (VerifyMark, error) {
	m := VerifyMark{Started: time.Now()}
	var xmin string
	// The snapshot of this statement is taken before the function's own:
	// its xmin is at most the recorded one, so this process re-verifies at
	// least what the record says.
	err := r.Pool.QueryRow(ctx, `SELECT pgphi.verification_begin($1), pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text,
		(SELECT (last_value + is_called::int)::float8 FROM pgphi.write_seq)`, r.Plan.ID).Scan(&m.ID, &xmin, &m.Counter)
	if err != nil {
		return m, fmt.Errorf("recording the start of a verification: %w", err)
	}
	m.SnapshotXmin, err = strconv.ParseUint(xmin, 10, 64)
	return m, err
}

// RecordVerification stores the result of the verify run m began, through
// pgphi.verification_finish (only the role that began it may finish it).
func RecordVerification(ctx context.Context, r *Runner, res *VerifyResult, m VerifyMark) error {
	_, err := r.Pool.Exec(ctx, "SELECT pgphi.verification_finish($1, $2, $3, $4, $5, $6)",
		m.ID, res.OK(), res.Rows, res.Values, res.Mismatches, res.Pending)
	if err != nil {
		return fmt.Errorf("recording a verification: %w", err)
	}
	return nil
}

// WriteCounter is the position of pgphi.write_seq, which a statement trigger
// advances once per insert or update statement on a protected table.
func WriteCounter(ctx context.Context, r *Runner) (float64, error) {
	var n float64
	err := r.Pool.QueryRow(ctx, "SELECT (last_value + is_called::int)::float8 FROM pgphi.write_seq").Scan(&n)
	return n, err
}

// Cleanup drops the plaintext of every table of the plan and purges it from
// the table's files. It refuses unless the plan id is confirmed and
// applications have cut over, then verifies every value itself (a recorded
// verification is evidence for the report, never a reason to drop: a role
// that could write one could otherwise make cleanup destroy plaintext whose
// ciphertext is wrong); rows written since that verification began are
// verified again under the lock that blocks writes.
func (r *Runner) Cleanup(ctx context.Context, confirm string, opt CleanupOptions) error {
	r.defaults()
	if confirm != r.Plan.ID {
		return withNextStep(refusef("--confirm `%s` is not the current plan %s", confirm, r.Plan.ID), OpPlan)
	}
	pending := false
	var verifiedFrom uint64
	for _, t := range r.Plan.Tables {
		if t.Restoring() {
			return withNextStep(refusef("a rollback of %s is under way: it must finish first", t.QualifiedName()), OpRollback)
		}
		if !t.Cleaned() {
			pending = true
		}
	}
	// A reindex's trigger reads the plaintext: it finishes (or is rolled
	// back) before the plaintext goes.
	var building []string
	if err := r.Pool.QueryRow(ctx, `SELECT COALESCE(array_agg(DISTINCT table_name || '.' || column_name), '{}') FROM pgphi.blind_indexes WHERE state = 'building'`).Scan(&building); err != nil {
		return err
	}
	if len(building) > 0 {
		return withNextStep(refusef("a reindex of %s is under way: it must finish first", strings.Join(building, ", ")), OpReindex)
	}
	if pending {
		// What depends on the plaintext is settled before anything is
		// verified or dropped: an object that would stop the drop halfway
		// (a view) or lose its meaning silently (uniqueness) refuses now.
		dropped, err := r.cleanupRefusal(ctx)
		if err != nil {
			return err
		}
		for _, d := range dropped {
			r.logf("    cleanup drops with the plaintext: %s.%s: %s %s", d.Table, d.Column, d.Kind, d.Object)
		}
		if verifiedFrom, err = r.checkCleanupAllowed(ctx); err != nil {
			return err
		}
		if r.indexers == nil {
			if r.indexers, err = LoadIndexers(ctx, r.Pool, r.Keys, r.Plan); err != nil {
				return err
			}
		}
	}
	// How the plaintext will be purged is settled before any is dropped: a
	// purge that cannot run refuses the cleanup now.
	if _, err := r.ChoosePurge(ctx, opt); err != nil {
		return err
	}
	for _, t := range r.Plan.Tables {
		if !t.Cleaned() {
			r.logf("==> cleanup %s: under a brief lock catch up, re-verify what changed since the verification, drop plaintext columns, triggers and marker", t.QualifiedName())
			if err := t.prepare(ctx, &opTx{r: r, t: t}, false); err != nil {
				return err
			}
			if err := r.dropPlaintext(ctx, t, opt, verifiedFrom); err != nil {
				r.dropCiphertextNotNullChecks(context.WithoutCancel(ctx), t)
				return err
			}
		}
		if err := r.purge(ctx, t, opt); err != nil {
			return err
		}
	}
	if err := SetFlag(ctx, r.Pool, FlagMigrationComplete, true); err != nil {
		return err
	}
	return nil
}

// checkCleanupAllowed refuses unless applications have cut over, then runs
// a full verification of the plan in this process and returns where it
// began (the xmin of its starting snapshot). Nothing recorded in pgphi's
// tables about earlier verifications is trusted.
func (r *Runner) checkCleanupAllowed(ctx context.Context) (verifiedFrom uint64, err error) {
	flags, err := GetFlags(ctx, r.Pool)
	if err != nil {
		return 0, err
	}
	for _, f := range flags {
		if (f.Name == FlagUseEncryptedSearch || f.Name == FlagRequireEncryption) && !f.Enabled {
			return 0, refusef("applications have not cut over: flag %s is off (pgphi flags set %s on, once they read and write ciphertext)", f.Name, f.Name)
		}
	}
	mark, err := MarkVerification(ctx, r)
	if err != nil {
		return 0, err
	}
	r.logf("==> cleanup: verify every value before anything is dropped")
	pending := &Plan{ID: r.Plan.ID, Spec: r.Plan.Spec}
	for _, t := range r.Plan.Tables {
		if !t.Cleaned() {
			pending.Tables = append(pending.Tables, t)
		}
	}
	res, err := VerifyObserved(ctx, r.Pool, r.Keys, pending, 0, r.Metrics)
	if err != nil {
		return 0, fmt.Errorf("verifying before cleanup: %w", err)
	}
	if rerr := RecordVerification(ctx, r, res, mark); rerr != nil {
		return 0, rerr
	}
	// Rows still pending (marked by the trigger) are caught up and
	// verified under the lock below; a value that does not verify, or a
	// trigger that may have let writes through unmarked, refuses now.
	if len(res.Triggers) > 0 {
		return 0, withNextStep(refusef("pgphi's triggers are not in place (%s): writes may have gone unmarked; an apply restores them",
			res.Triggers[0]), OpApply, OpVerify)
	}
	if res.Mismatches > 0 {
		first := ""
		if len(res.Examples) > 0 {
			first = "; first: " + res.Examples[0].String()
		}
		return 0, withNextStep(refusef("verification before cleanup failed: %d values do not verify%s; an apply encrypts them again",
			res.Mismatches, first), OpApply, OpCleanup)
	}
	r.logf("    verified %d values in %d rows", res.Values, res.Rows)
	return mark.SnapshotXmin, nil
}

// dropPlaintext does the irreversible part in one transaction: under a lock
// that blocks writers, every operation's Cleanup (op.go) catches up what is
// still marked, checks that every plaintext has its ciphertext and terms,
// then drops the plaintext, the triggers and the marker. A crash before
// commit leaves everything as it was.
func (r *Runner) dropPlaintext(ctx context.Context, t *Target, opt CleanupOptions, verifiedFrom uint64) error {
	return r.ddl(ctx, "cleanup "+t.QualifiedName(), func(tx pgx.Tx) error {
		// EXCLUSIVE blocks writers, not readers, for the few statements below.
		if _, err := tx.Exec(ctx, "LOCK TABLE "+t.Ident()+" IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		// A trigger disabled or replaced since the verification would have
		// let writes through unmarked: look again under the lock.
		problems, err := t.triggerProblems(ctx, tx)
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			return withNextStep(refusef("pgphi's triggers are not in place (%s): an apply restores them", problems[0]), OpApply)
		}
		notNull, err := originalNotNull(ctx, tx, t)
		if err != nil {
			return err
		}
		// Every operation of the table, in the reverse of apply's order:
		// the catch-up and its re-verification first, then the triggers,
		// then the plaintext and what named it.
		return t.undo(ctx, &opTx{r: r, t: t, tx: tx, notNull: notNull, rename: opt.Rename, verifiedFrom: verifiedFrom}, false)
	})
}

// reverifyUnderLock checks, while writers are blocked, every row that
// cleanup's own verification may not have seen (written by a transaction at or after
// its starting snapshot, including the catch-up just above) and every row
// still marked or missing a ciphertext or its terms. Any problem refuses the
// cleanup; nothing has been dropped yet.
func (r *Runner) reverifyUnderLock(ctx context.Context, tx pgx.Tx, t *Target, verifiedFrom uint64) (err error) {
	var span int64
	if err := tx.QueryRow(ctx, "SELECT (pg_current_xact_id()::text::numeric - $1::text::numeric)::bigint", strconv.FormatUint(verifiedFrom, 10)).Scan(&span); err != nil {
		return err
	}
	// age(xmin) counts back from this transaction's id and saturates for
	// frozen rows; a verification this far back is too old to compare with.
	if span < 0 || span > 1<<30 {
		return withNextStep(refusef("the last verification is %d transactions old", span), OpVerify)
	}
	// Read as the table's owner where the connected role may: row-level
	// security would make the read fail for anyone else.
	restore, err := r.asOwner(ctx, tx, t)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE age(xmin) <= $1 OR %s IS TRUE OR %s",
		verifySelect(t), t.Ident(), ident(MarkerColumn), t.incompleteRowsPredicate()), span+1)
	if err != nil {
		return fmt.Errorf("re-verifying %s: %w", t.QualifiedName(), err)
	}
	defer rows.Close()
	defer func() {
		rows.Close()
		if rerr := restore(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	var formats []int16
	for _, fd := range rows.FieldDescriptions() {
		formats = append(formats, fd.Format)
	}
	check := newRowChecker(r.Keys, r.indexers, t)
	res := &VerifyResult{}
	for rows.Next() {
		check.check(res, rows.RawValues(), formats)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("re-verifying %s: %w", t.QualifiedName(), err)
	}
	r.logf("    %s: %d rows written since the last verification or still incomplete, re-verified under the lock", t.QualifiedName(), res.Rows)
	if res.Pending > 0 || res.Mismatches > 0 {
		first := ""
		if len(res.Examples) > 0 {
			first = "; first: " + res.Examples[0].String()
		}
		return withNextStep(refusef("%s has %d rows without a current ciphertext and %d values that do not verify%s",
			t.QualifiedName(), res.Pending, res.Mismatches, first), OpApply, OpVerify)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Leftovers lists where plaintext may still live outside the table after
// cleanup, with what this server says about each, for the operator to expire.
func Leftovers(ctx context.Context, r *Runner) []string {
	setting := func(name string) string {
		var v string
		if err := r.Pool.QueryRow(ctx, "SELECT current_setting($1, true)", name).Scan(&v); err != nil {
			return "unknown"
		}
		return v
	}
	var replicas, slots int
	r.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication").Scan(&replicas)
	r.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&slots)
	return []string{
		fmt.Sprintf("WAL: segments written before cleanup hold the old row versions (wal_level=%s); they recycle after checkpoints, but archived copies stay (archive_mode=%s) until you expire them", setting("wal_level"), setting("archive_mode")),
		"base backups and snapshots taken before cleanup: expire them under your retention policy, or re-take them now",
		fmt.Sprintf("replicas: %d streaming now, %d replication slots; physical replicas were purged by the same rewrite, logical subscribers keep their own copies", replicas, slots),
		"pg_dump files, CSV exports and test or staging copies made before cleanup",
		"server logs, if statements with values were logged (log_statement, log_min_duration_statement)",
	}
}

// refusal is a refusal (exit 4) whose whole text pgphi wrote: table, column
// and primary key names and values, never a protected value. Being pgphi's
// own type, redaction keeps it as written, primary keys included, so the
// operator learns which row to fix.
type refusal struct{ msg string }

func (e *refusal) Error() string { return "refused: " + e.msg }
func (e *refusal) Unwrap() error { return ErrRefused }

func refusef(format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...)}
}

// copyColumnComment gives column to of t the comment of column from, if it
// has one (COMMENT takes only a literal: it is read, then quoted).
func copyColumnComment(ctx context.Context, tx pgx.Tx, t *Target, from, to string) error {
	var comment *string
	err := tx.QueryRow(ctx, `SELECT pg_catalog.col_description(attrelid, attnum) FROM pg_catalog.pg_attribute
		WHERE attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND attname OPERATOR(pg_catalog.=) $2 AND NOT attisdropped`, t.Ident(), from).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && comment == nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the comment of %s.%s: %w", t.QualifiedName(), from, err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("COMMENT ON COLUMN %s.%s IS %s", t.Ident(), ident(to), quoteLiteral(*comment))); err != nil {
		return fmt.Errorf("carrying the comment of %s.%s to %s: %w", t.QualifiedName(), from, to, err)
	}
	return nil
}
