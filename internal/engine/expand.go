package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/catalog"
)

// expandStep runs the Apply of every operation of a table at StageExpand
// (op.go: the ciphertext and terms columns, the marker, the NOT NULL
// checks, the unique digests, the triggers) in one transaction, so that no
// application write can fall between them.
type expandStep struct{ t *Target }

func (s expandStep) Describe() string {
	var cols []string
	for _, c := range s.t.Columns {
		cols = append(cols, c.Encrypted)
	}
	d := fmt.Sprintf("expand %s: add %s, marker %s, triggers %s", s.t.QualifiedName(), strings.Join(cols, ", "), MarkerColumn, strings.Join(triggerNames, ", "))
	var nn []string
	for _, c := range s.t.Columns {
		if c.NotNull {
			nn = append(nn, fmt.Sprintf("CHECK (%s IS NOT NULL OR %s IS NOT NULL)", c.Name, c.Encrypted))
		}
	}
	if len(nn) > 0 {
		d += "; NOT NULL becomes " + strings.Join(nn, ", ") + ", validated without blocking writes"
	}
	d += "; a <col>_uniq digest column for each unique rule on protected columns, and the columns' CHECKs and domains recorded as validation rules"
	return d
}

// Run expands the table unless everything is in place already, then runs
// the operations' AfterExpand (the CHECKs that stand for NOT NULL
// validated, validation rules recorded).
func (s expandStep) Run(ctx context.Context, r *Runner) error {
	t := s.t
	if err := CheckTableShapes(ctx, r.Pool, r.Config, []*catalog.Table{t.Table}); err != nil {
		return err
	}
	if err := r.planUniques(ctx, t); err != nil {
		return err
	}
	done, err := s.alreadyDone(ctx, r)
	if err != nil {
		return err
	}
	if !done {
		if err := s.expand(ctx, r); err != nil {
			return err
		}
	}
	// What the operations do after the transaction, whether it ran or not.
	o := &opTx{r: r, t: t}
	return t.forward(func(op Operation) error {
		if u, ok := op.(unlocked); ok && op.Stage() == StageExpand {
			return u.AfterExpand(ctx, o)
		}
		return nil
	})
}

func (s expandStep) expand(ctx context.Context, r *Runner) error {
	t := s.t
	return r.ddl(ctx, "expand "+t.QualifiedName(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('pgphi expand ' || $1))", t.QualifiedName()); err != nil {
			return err
		}
		// An installation made by an older pgphi, or objects someone
		// changed: say what this run puts back.
		if probs, err := t.triggerProblems(ctx, tx); err == nil {
			var fix []string
			for _, p := range probs {
				if !strings.HasPrefix(p.Problem, "missing") {
					fix = append(fix, p.Object+": "+p.Problem)
				}
			}
			if len(fix) > 0 {
				r.logf("    %s: replacing pgphi's objects: %s", t.QualifiedName(), strings.Join(fix, "; "))
			}
		}
		// Every operation of the table that puts objects in place at
		// expand, in order, in this one transaction.
		o := &opTx{r: r, t: t, tx: tx, notNull: map[string]bool{}}
		return t.forward(func(op Operation) error {
			if op.Stage() != StageExpand {
				return nil
			}
			return op.Apply(ctx, o)
		})
	})
}

// alreadyDone avoids taking an ACCESS EXCLUSIVE lock on a rerun when every
// object is already in place with the current definition: the columns, and
// the mark function, triggers and envelope checks exactly as CheckTriggers
// expects them (SECURITY INVOKER, this version's body, enabled, unchanged).
// An installation made by an older pgphi fails that test and is expanded
// again in place.
func (s expandStep) alreadyDone(ctx context.Context, r *Runner) (bool, error) {
	t := s.t
	want := t.addedColumns()
	var nCols int
	err := r.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = ANY($2) AND NOT attisdropped`,
		t.Ident(), want).Scan(&nCols)
	if err != nil {
		return false, fmt.Errorf("inspecting %s: %w", t.QualifiedName(), err)
	}
	if nCols != len(want) {
		return false, nil
	}
	// A protected column still NOT NULL (expanded by an earlier version):
	// expand turns it into pgphi's CHECK.
	var plain []string
	for _, c := range t.Columns {
		plain = append(plain, c.Name)
	}
	var stillNotNull bool
	if err := r.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = ANY($2) AND attnotnull AND NOT attisdropped)`,
		t.Ident(), plain).Scan(&stillNotNull); err != nil {
		return false, fmt.Errorf("inspecting %s: %w", t.QualifiedName(), err)
	}
	if stillNotNull {
		return false, nil
	}
	probs, err := t.triggerProblems(ctx, r.Pool)
	if err != nil {
		return false, err
	}
	return len(probs) == 0, nil
}
