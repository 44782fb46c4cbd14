package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

// A reindex rebuilds a searchable column's blind index terms online as a new
// generation: new sizing measured from the data under the current budget,
// and/or the active data key, recorded in pgphi.blind_indexes with state
// 'building' beside the active generation. Its terms go to a second column,
// <col>_bidx_next, with its own GIN index (built concurrently):
//
//   - a trigger (SECURITY INVOKER, no key in the database, like the mark
//     function) clears a row's next-generation terms when a write changes
//     its value or ciphertext without writing them, so terms of an older
//     value never stand;
//   - writers that know the generation (the root package's Row, Seal and
//     SealAll; apply's catch-up) write both generations; the others leave
//     the next generation cleared for the reindex;
//   - the backfill runs over leased chunks (runChunks, as apply's), resumable
//     and throttled; a sweep then fills every row left cleared;
//   - search reads both generations: candidates from either, exact re-check
//     as always;
//   - at the end every term of the new generation is verified against the
//     value, and one transaction, under a lock that waits for writers, fills
//     what writes cleared meanwhile, drops the old column and index, renames
//     the new ones into their place and makes the new generation active.

// NextIndexSuffix is appended to a column's blind index column to name the
// column of the generation a reindex builds: <col>_bidx_next.
const NextIndexSuffix = "_next"

// NextIndex names the column of the generation a reindex builds.
func (c *TargetColumn) NextIndex() string { return c.Index + NextIndexSuffix }

func (t *Target) nextSearchIndex(c *TargetColumn) string {
	return objectName("pgphi_bidx_next_", t.QualifiedName()+"."+c.Name)
}

// todoIndex is the partial index of the rows a reindex's sweep and switch
// still have to fill: built after the chunks, when few are left, so that
// neither reads the whole table (the switch does it under its lock).
func (t *Target) todoIndex(c *TargetColumn) string {
	return objectName("pgphi_bidx_todo_", t.QualifiedName()+"."+c.Name)
}

// todoPredicate is true for a row with a value and no next-generation terms.
func todoPredicate(c *TargetColumn) string {
	if c.Cleaned {
		return fmt.Sprintf("%s IS NULL AND %s IS NOT NULL", ident(c.NextIndex()), ident(c.Encrypted))
	}
	return fmt.Sprintf("%s IS NULL AND (%s IS NOT NULL OR %s IS NOT NULL)", ident(c.NextIndex()), ident(c.Name), ident(c.Encrypted))
}

func (t *Target) reindexFunction(c *TargetColumn) string {
	return objectName("reindex_", t.QualifiedName()+"."+c.Name)
}

func (t *Target) reindexTrigger(c *TargetColumn) string {
	return "zz_pgphi_reindex_" + shortHash(c.Name)
}

// ReindexOptions selects the columns and what changes.
type ReindexOptions struct {
	Table, Column string // "" for every table / column
	// Resize sizes the new generation from the data under the current
	// budget (or the config's bits); without it the bits stay.
	Resize bool
	// NewKey derives the new generation's keys from the active data key;
	// without it the key stays.
	NewKey bool
}

// ReindexResult is what a reindex did to one column.
type ReindexResult struct {
	Table, Column  string
	From, To       int // generations
	KeyFrom, KeyTo uint32
	Families       []ReindexFamily
	Rows           int64 // rows whose new terms were verified
	Switched       bool
}

// ReindexFamily is one term family before and after.
type ReindexFamily struct {
	SubKind            string
	BitsFrom, BitsTo   int
	SizingFrom, Sizing string
}

// ErrReindex is the class of reindex refusals (a column it cannot rebuild).
var ErrReindex = errors.New("reindex refused")

// TermsError says that one row's value could not be read, or that its
// next-generation terms did not verify. It names table, column and primary
// key; it never carries the value or a term.
type TermsError struct {
	Table, Column string
	Key           []string
	KeyColumns    []string
	Reason        string
}

func (e *TermsError) Error() string {
	return fmt.Sprintf("reindex of %s.%s at key (%s)=(%s): %s; nothing was switched",
		e.Table, e.Column, strings.Join(e.KeyColumns, ", "), strings.Join(e.Key, ", "), e.Reason)
}

// Reindex rebuilds the terms of every selected searchable column as a new
// generation and switches to it. A reindex interrupted at any point resumes
// where it stopped when run again (with the same options or none: the
// generation being built is recorded). Columns are done one after the other.
func (r *Runner) Reindex(ctx context.Context, o ReindexOptions) ([]ReindexResult, error) {
	r.defaults()
	type col struct {
		t *Target
		c *TargetColumn
	}
	var cols []col
	tableFound := o.Table == ""
	for _, t := range r.Plan.Tables {
		if o.Table != "" && t.QualifiedName() != o.Table && !(t.Schema == "public" && t.Name == o.Table) {
			continue
		}
		tableFound = true
		for i := range t.Columns {
			c := &t.Columns[i]
			if o.Column != "" && c.Name != o.Column {
				continue
			}
			if !c.HasIndex() {
				if o.Column != "" {
					return nil, fmt.Errorf("%w: %s.%s has no search kinds", ErrReindex, t.QualifiedName(), c.Name)
				}
				continue
			}
			if t.Restoring() {
				return nil, withNextStep(fmt.Errorf("%w: a rollback of %s is under way", ErrReindex, t.QualifiedName()), OpRollback)
			}
			if len(c.NextIndex()) > 63 {
				return nil, fmt.Errorf("%w: %s.%s: the column of the next generation, %q, would be longer than 63 bytes", ErrReindex, t.QualifiedName(), c.Name, c.NextIndex())
			}
			cols = append(cols, col{t, c})
		}
	}
	if !tableFound {
		return nil, fmt.Errorf("%w: table %s is not in the config", ErrReindex, o.Table)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("%w: no searchable column matches", ErrReindex)
	}
	// The chunks of a reindex hang off the plan, which apply recorded; a
	// config edited since (same columns) records its plan here.
	if _, err := r.Pool.Exec(ctx, "INSERT INTO pgphi.plans (plan_id, spec) VALUES ($1, $2) ON CONFLICT (plan_id) DO NOTHING", r.Plan.ID, r.Plan.SpecJSON()); err != nil {
		return nil, fmt.Errorf("recording plan: %w", err)
	}
	if r.Throttle != nil {
		if r.Throttle.CanaryQuery == "" {
			t := cols[0].t
			r.Throttle.CanaryQuery = fmt.Sprintf("SELECT %s FROM %s ORDER BY %s LIMIT 10", t.keyList(""), t.Ident(), t.keyList(""))
		}
		if err := r.Throttle.Start(ctx, r.Pool); err != nil {
			return nil, err
		}
		defer r.Throttle.Stop()
	}
	var out []ReindexResult
	for _, x := range cols {
		res, err := r.reindexColumn(ctx, x.t, x.c, o)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

func (r *Runner) reindexColumn(ctx context.Context, t *Target, c *TargetColumn, o ReindexOptions) (ReindexResult, error) {
	res := ReindexResult{Table: t.QualifiedName(), Column: c.Name}
	active, err := columnSpecs(ctx, r, t, c, GenerationActive)
	if err != nil {
		return res, err
	}
	if len(active) == 0 {
		return res, withNextStep(fmt.Errorf("%w: %s.%s has no terms yet", ErrReindex, t.QualifiedName(), c.Name), OpApply)
	}
	next, err := columnSpecs(ctx, r, t, c, GenerationBuilding)
	if err != nil {
		return res, err
	}
	if len(next) == 0 {
		r.logf("==> reindex %s.%s plan: the next generation", t.QualifiedName(), c.Name)
		if next, err = r.planGeneration(ctx, t, c, active, o); err != nil {
			return res, err
		}
		if err := r.beginGeneration(ctx, t, c, next); err != nil {
			return res, err
		}
		// Another process may have begun one first: its generation is the one.
		if next, err = columnSpecs(ctx, r, t, c, GenerationBuilding); err != nil {
			return res, err
		}
	} else {
		r.logf("==> reindex %s.%s resume: resuming generation %d", t.QualifiedName(), c.Name, next[0].Generation)
	}
	res.From, res.To, res.KeyFrom, res.KeyTo = active[0].Generation, next[0].Generation, active[0].KeyID, next[0].KeyID
	for i := range next {
		f := ReindexFamily{SubKind: string(next[i].SubKind), BitsTo: next[i].Bits, Sizing: next[i].Sizing}
		for _, a := range active {
			if a.SubKind == next[i].SubKind {
				f.BitsFrom, f.SizingFrom = a.Bits, a.Sizing
			}
		}
		res.Families = append(res.Families, f)
	}
	idx, err := nextIndexer(r.Keys, t, c, active, next)
	if err != nil {
		return res, err
	}
	r.logf("==> reindex %s.%s index: GIN index %s on %s, built concurrently", t.QualifiedName(), c.Name, t.nextSearchIndex(c), c.NextIndex())
	if err := r.buildIndex(ctx, t, t.nextSearchIndex(c), fmt.Sprintf("USING gin (%s)", ident(c.NextIndex()))); err != nil {
		return res, err
	}
	r.logf("==> reindex %s.%s write: generation %d over chunks leased with FOR UPDATE SKIP LOCKED", t.QualifiedName(), c.Name, res.To)
	space := reindexSpace(t, c, res.To)
	if err := r.runChunks(ctx, "reindex", space, t, func(ctx context.Context, tx pgx.Tx, from, upper []string) (int, []string, error) {
		q, args := t.chunkQuery(currentValue(c), "", from, upper, r.BatchSize)
		return r.fillNext(ctx, tx, t, c, idx, q, args)
	}); err != nil {
		return res, err
	}
	// Rows written since their chunk was done without the new terms,
	// found through a partial index.
	r.logf("==> reindex %s.%s sweep: rows written meanwhile without generation %d's terms", t.QualifiedName(), c.Name, res.To)
	if err := r.buildIndex(ctx, t, t.todoIndex(c), fmt.Sprintf("(%s) WHERE %s", t.keyList(""), todoPredicate(c))); err != nil {
		return res, err
	}
	for {
		var n int
		err := pgx.BeginFunc(ctx, r.Pool, func(tx pgx.Tx) error {
			var err error
			q, args := t.lockQuery(currentValue(c), todoPredicate(c), nil, r.BatchSize, true)
			n, _, err = r.fillNext(ctx, tx, t, c, idx, q, args)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("reindex %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		if n == 0 {
			break
		}
	}
	r.logf("==> reindex %s.%s verify: every term of generation %d", t.QualifiedName(), c.Name, res.To)
	if res.Rows, err = r.verifyNext(ctx, t, c, idx); err != nil {
		return res, withNextStep(err, OpReindex)
	}
	r.logf("==> reindex %s.%s switch: to generation %d in one transaction", t.QualifiedName(), c.Name, res.To)
	if err := r.switchGeneration(ctx, t, c, idx, res.To); err != nil {
		return res, err
	}
	res.Switched = true
	return res, nil
}

// reindexSpace names the chunk space of one generation of one column.
func reindexSpace(t *Target, c *TargetColumn, gen int) string {
	return t.QualifiedName() + "#reindex:" + c.Name + ":" + strconv.Itoa(gen)
}

// columnSpecs is the recorded families of one column in one state, in
// sub-kind order.
func columnSpecs(ctx context.Context, r *Runner, t *Target, c *TargetColumn, state string) ([]IndexSpec, error) {
	stored, err := storedSpecs(ctx, r.Pool, state)
	if err != nil {
		return nil, err
	}
	var out []IndexSpec
	for _, sub := range c.SubKinds() {
		if s, ok := stored[t.QualifiedName()+"\x00"+c.Name+"\x00"+string(sub)]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// planGeneration decides the next generation's families: bits from the
// data (o.Resize) or as they are, keys from the active data key (o.NewKey)
// or as they are, the recorded term options unchanged.
func (r *Runner) planGeneration(ctx context.Context, t *Target, c *TargetColumn, active []IndexSpec, o ReindexOptions) ([]IndexSpec, error) {
	gen := 0
	for _, a := range active {
		gen = max(gen, a.Generation)
	}
	keyID := active[0].KeyID
	if o.NewKey {
		keyID = r.Keys.ActiveKeyID()
		if keyID == active[0].KeyID {
			return nil, fmt.Errorf("%w: the terms of %s.%s already derive from the active data key %d; rotate the data key first for new blind index keys", ErrReindex, t.QualifiedName(), c.Name, keyID)
		}
	}
	opts, err := recordedOptions(t, c, active)
	if err != nil {
		return nil, err
	}
	next := make([]IndexSpec, len(active))
	for i, a := range active {
		a.Generation, a.KeyID = gen+1, keyID
		if a.Options == nil {
			st := opts.Stored()
			a.Options = &st
		}
		next[i] = a
	}
	if !o.Resize {
		return next, nil
	}
	ks := map[blindindex.SubKind][]byte{}
	for _, sub := range c.SubKinds() {
		k, err := r.Keys.PurposeKeyFor(keyID, keys.PurposeBlindIndex, t.QualifiedName(), c.Name, string(sub))
		if err != nil {
			return nil, err
		}
		ks[sub] = k
	}
	sz, err := blindindex.NewSizer(c.Search, opts, ks)
	if err != nil {
		return nil, fmt.Errorf("sizing the blind index of %s.%s: %w", t.QualifiedName(), c.Name, err)
	}
	if err := r.readValues(ctx, t, c, func(text string) { sz.Add(text) }); err != nil {
		return nil, fmt.Errorf("sizing the blind index of %s.%s from its values: %w", t.QualifiedName(), c.Name, err)
	}
	z := sz.Sizing()
	for i := range next {
		s := &next[i]
		s.Rows, s.ColumnValues, s.ValuesPerArray = max(z.Rows, 1), z.Values, z.ValuesPerSet
		if b, ok := c.BitsOverride[string(s.SubKind)]; ok {
			s.Bits, s.Sizing, s.Values = b, SizedByConfig, 0
			continue
		}
		for _, f := range z.Families {
			if f.SubKind == s.SubKind {
				s.Bits, s.Values, s.Sizing = f.Bits, f.Values, SizedByDistinct
			}
		}
	}
	return next, nil
}

// readValues hands every value of the column to fn: the plaintext where the
// row has one (it is current), else the decrypted ciphertext. It reads as
// the table's owner, in one read-only transaction.
func (r *Runner) readValues(ctx context.Context, t *Target, c *TargetColumn, fn func(string)) error {
	opener := r.Keys.Opener(t.QualifiedName(), c.Name)
	nk := len(t.PrimaryKey)
	return pgx.BeginTxFunc(ctx, r.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := r.asOwner(ctx, tx, t); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s, %s, %s FROM %s WHERE %s IS NOT NULL OR %s IS NOT NULL",
			strings.Join(t.KeyTexts(), ", "), plainText(c), ident(c.Encrypted), t.Ident(), plainOrNull(c), ident(c.Encrypted)))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			raw := rows.RawValues()
			text, ok, err := valueText(t, c, opener, keyStrings(raw[:nk]), raw[nk], raw[nk+1])
			if err != nil {
				return err
			}
			if ok {
				fn(text)
			}
		}
		return rows.Err()
	})
}

func plainText(c *TargetColumn) string {
	if c.Cleaned {
		return "NULL::text"
	}
	return ident(c.Name) + "::text"
}

func plainOrNull(c *TargetColumn) string {
	if c.Cleaned {
		return "NULL"
	}
	return ident(c.Name)
}

// valueText is a row's current value: its plaintext, else its decrypted
// ciphertext; ok is false for a NULL value.
func valueText(t *Target, c *TargetColumn, opener *envelope.Opener, key []string, plain, ct []byte) (string, bool, error) {
	if plain != nil {
		return string(plain), true, nil
	}
	if ct == nil {
		return "", false, nil
	}
	v, err := opener.Open(ct, envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
	if err != nil {
		return "", false, &TermsError{Table: t.QualifiedName(), Column: c.Name, Key: key, KeyColumns: t.keyNames(), Reason: "the ciphertext does not decrypt: " + err.Error()}
	}
	return v.Text, true, nil
}

// beginGeneration adds the next generation's column and trigger and records
// its families as building, in one transaction: from its commit on, every
// write either writes the new terms or leaves them cleared.
func (r *Runner) beginGeneration(ctx context.Context, t *Target, c *TargetColumn, next []IndexSpec) error {
	return r.ddl(ctx, "reindex "+t.QualifiedName()+"."+c.Name, func(tx pgx.Tx) error {
		// One process begins a column's generation; a second one finds it.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('pgphi reindex ' || $1 || ' ' || $2))", t.QualifiedName(), c.Name); err != nil {
			return err
		}
		var begun bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pgphi.blind_indexes WHERE table_name = $1 AND column_name = $2 AND state = 'building')`,
			t.QualifiedName(), c.Name).Scan(&begun); err != nil || begun {
			return err
		}
		for _, q := range t.reindexTriggerSQL(c) {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("adding the next generation's column to %s: %w", t.QualifiedName(), err)
			}
		}
		// Like the mark function, owned by pgphi's schema owner, in the
		// same transaction as its grants.
		fn := "FUNCTION " + pgx.Identifier{"pgphi", t.reindexFunction(c)}.Sanitize() + "()"
		if err := state.AdoptAsOwner(ctx, tx, fn); err != nil {
			return fmt.Errorf("giving %s to pgphi's schema owner: %w", fn, err)
		}
		for _, s := range next {
			var values, colValues *int64
			var perArray *float64
			if s.Sizing == SizedByDistinct {
				values, colValues, perArray = &s.Values, &s.ColumnValues, &s.ValuesPerArray
			}
			if _, err := tx.Exec(ctx, `INSERT INTO pgphi.blind_indexes (table_name, column_name, sub_kind, bits, key_id, rows_planned, options, format_version,
					sizing, distinct_values, column_values, values_per_array, generation, state)
				VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14)`,
				s.Table, s.Column, string(s.SubKind), s.Bits, int32(s.KeyID), s.Rows, string(s.Options.JSON()), blindindex.FormatVersion,
				s.Sizing, values, colValues, perArray, s.Generation, GenerationBuilding); err != nil {
				return fmt.Errorf("recording the next generation of %s.%s: %w", t.QualifiedName(), c.Name, err)
			}
		}
		return nil
	})
}

// reindexTriggerSQL adds the next generation's column and the trigger that
// clears its terms when a write changes the value (plaintext or
// ciphertext) without writing them. The function is SECURITY INVOKER with
// a pinned search_path and no call into pgphi: it runs as the writer and
// reads nothing; EXECUTE is revoked from PUBLIC (PostgreSQL checks it when
// the trigger is created, not when it fires).
func (t *Target) reindexTriggerSQL(c *TargetColumn) []string {
	next := ident(c.NextIndex())
	changed := fmt.Sprintf("NEW.%[1]s IS DISTINCT FROM OLD.%[1]s", ident(c.Encrypted))
	if !c.Cleaned {
		changed += " OR " + valueChanged(c.Name)
	}
	fn := pgx.Identifier{"pgphi", t.reindexFunction(c)}.Sanitize()
	return []string{
		fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s bigint[]", t.Ident(), next),
		fmt.Sprintf("CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $pgphi$\n"+
			"-- pgphi reindex: the next generation's terms of a changed value are stale\nBEGIN\n  NEW.%s := NULL;\n  RETURN NEW;\nEND\n$pgphi$", fn, next),
		fmt.Sprintf("REVOKE EXECUTE ON FUNCTION %s() FROM PUBLIC", fn),
		fmt.Sprintf("CREATE OR REPLACE TRIGGER %s BEFORE UPDATE ON %s FOR EACH ROW WHEN ((%s) AND NEW.%s IS NOT DISTINCT FROM OLD.%s AND NEW.%s IS NOT NULL) EXECUTE FUNCTION %s()",
			ident(t.reindexTrigger(c)), t.Ident(), changed, next, next, next, fn),
	}
}

// nextIndexer is the term computer of the generation being built.
func nextIndexer(ring *keys.Keyring, t *Target, c *TargetColumn, active, next []IndexSpec) (*blindindex.Column, error) {
	opts, err := recordedOptions(t, c, active)
	if err != nil {
		return nil, err
	}
	keyMap := map[blindindex.SubKind][]byte{}
	bits := map[blindindex.SubKind]int{}
	for _, s := range next {
		k, err := ring.PurposeKeyFor(s.KeyID, keys.PurposeBlindIndex, t.QualifiedName(), c.Name, string(s.SubKind))
		if err != nil {
			return nil, err
		}
		keyMap[s.SubKind], bits[s.SubKind] = k, s.Bits
	}
	col, err := blindindex.NewColumn(c.Search, opts, keyMap, bits)
	if err != nil {
		return nil, fmt.Errorf("next generation of the blind index of %s.%s: %w", t.QualifiedName(), c.Name, err)
	}
	return col, nil
}

// LoadNextIndexers builds the term computers of the generations reindexes
// are building (none when no reindex runs), keyed like LoadIndexers.
func LoadNextIndexers(ctx context.Context, q Querier, ring *keys.Keyring, p *Plan) (Indexers, error) {
	building, err := storedSpecs(ctx, q, GenerationBuilding)
	if err != nil || len(building) == 0 {
		return Indexers{}, err
	}
	active, err := storedSpecs(ctx, q, GenerationActive)
	if err != nil {
		return nil, err
	}
	out := Indexers{}
	for _, t := range p.Tables {
		for i := range t.Columns {
			c := &t.Columns[i]
			var a, n []IndexSpec
			for _, sub := range c.SubKinds() {
				k := t.QualifiedName() + "\x00" + c.Name + "\x00" + string(sub)
				if s, ok := building[k]; ok {
					n = append(n, s)
				}
				if s, ok := active[k]; ok {
					a = append(a, s)
				}
			}
			if len(n) == 0 {
				continue
			}
			col, err := nextIndexer(ring, t, c, a, n)
			if err != nil {
				return nil, err
			}
			out[indexerKey(t.QualifiedName(), c.Name)] = col
		}
	}
	return out, nil
}

// currentValue reads what valueText takes: the plaintext's text, then the
// ciphertext.
func currentValue(c *TargetColumn) []string {
	return []string{plainText(c), ident(c.Encrypted)}
}

// fillNext computes the next generation's terms of the rows query selects
// (and locks: ctid, the key's texts, currentValue) from their current value
// and writes them with the batch writer (batchwrite.go), as the table's
// owner; rows without a value are left alone. It returns the rows read
// (the chunk's checkpoint moves past those too) and the last row's key.
func (r *Runner) fillNext(ctx context.Context, tx pgx.Tx, t *Target, c *TargetColumn, idx *blindindex.Column, query string, args []any) (int, []string, error) {
	opener := r.Keys.Opener(t.QualifiedName(), c.Name)
	w := &batchWrite{what: "the next generation's terms of " + t.QualifiedName() + "." + c.Name, query: query, args: args,
		cols: []batchColumn{{name: c.NextIndex(), typ: "pg_catalog.int8[]"}},
		compute: func(key []string, in [][]byte, out []any) (bool, error) {
			text, ok, err := valueText(t, c, opener, key, in[0], in[1])
			if err != nil || !ok {
				return false, err
			}
			out[0] = idx.Terms(make([]int64, 0, 16), text)
			return true, nil
		}}
	res, err := r.writeBatch(ctx, tx, t, w)
	if err != nil {
		return 0, nil, err
	}
	return res.read, res.last, nil
}

// verifyNext recomputes, page by page in key order, the next generation's
// terms of every row that has them and compares them with the stored ones
// (as sets). A row a writer cleared meanwhile is left to the switch, which
// fills it under its lock. It returns the rows verified.
func (r *Runner) verifyNext(ctx context.Context, t *Target, c *TargetColumn, idx *blindindex.Column) (int64, error) {
	nk := len(t.PrimaryKey)
	sel := fmt.Sprintf("%s, %s, %s, %s", strings.Join(t.KeyTexts(), ", "), plainText(c), ident(c.Encrypted), ident(c.NextIndex()))
	first := fmt.Sprintf("SELECT %s FROM %s ORDER BY %s LIMIT $1", sel, t.Ident(), t.keyList(""))
	next := fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT $%d", sel, t.Ident(), t.keyCompare(">", 1), t.keyList(""), nk+1)
	opener := r.Keys.Opener(t.QualifiedName(), c.Name)
	var last []string
	var verified int64
	page := max(r.BatchSize, 100)
	for {
		n := 0
		err := pgx.BeginTxFunc(ctx, r.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if _, err := r.asOwner(ctx, tx, t); err != nil {
				return err
			}
			q, args := first, []any{page}
			if last != nil {
				q, args = next, append(stringArgs(last), page)
			}
			rows, err := tx.Query(ctx, q, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				n++
				raw := rows.RawValues()
				last = keyStrings(raw[:nk])
				var stored []int64
				if err := rows.Scan(append(make([]any, nk+2), &stored)...); err != nil {
					return err
				}
				text, ok, err := valueText(t, c, opener, last, raw[nk], raw[nk+1])
				if err != nil {
					return err
				}
				if stored == nil {
					continue
				}
				var want []int64
				if ok {
					want = idx.Terms(make([]int64, 0, 16), text)
				}
				if !sameTerms(want, stored) {
					return &TermsError{Table: t.QualifiedName(), Column: c.Name, Key: last, KeyColumns: t.keyNames(),
						Reason: "the next generation's terms differ from the value's (a writer wrote wrong ones; clear them: UPDATE ... SET " + c.NextIndex() + " = NULL)"}
				}
				verified++
			}
			return rows.Err()
		})
		if err != nil {
			return verified, fmt.Errorf("verifying the next generation of %s.%s: %w", t.QualifiedName(), c.Name, err)
		}
		if n < page {
			return verified, nil
		}
	}
}

func sameTerms(a, b []int64) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// switchGeneration makes the next generation the active one in one
// transaction: under an exclusive lock on the table (writers and readers
// wait for its end, which is short), it fills the rows writes left without
// new terms, drops the old terms' column (and its GIN index), renames the
// new column and index into their places, removes the reindex trigger and
// flips the generations in pgphi.blind_indexes.
func (r *Runner) switchGeneration(ctx context.Context, t *Target, c *TargetColumn, idx *blindindex.Column, gen int) error {
	return r.ddl(ctx, "switching "+t.QualifiedName()+"."+c.Name+" to generation "+strconv.Itoa(gen), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", t.Ident())); err != nil {
			return err
		}
		for {
			q, args := t.lockQuery(currentValue(c), todoPredicate(c), nil, max(r.BatchSize, 100), false)
			n, _, err := r.fillNext(ctx, tx, t, c, idx, q, args)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
		}
		fn := pgx.Identifier{"pgphi", t.reindexFunction(c)}.Sanitize()
		for _, q := range []string{
			fmt.Sprintf("DROP INDEX IF EXISTS %s", pgx.Identifier{t.Schema, t.todoIndex(c)}.Sanitize()),
			fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", ident(t.reindexTrigger(c)), t.Ident()),
			fmt.Sprintf("DROP FUNCTION IF EXISTS %s()", fn),
			fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s", t.Ident(), ident(c.Index)),
			fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", t.Ident(), ident(c.NextIndex()), ident(c.Index)),
			fmt.Sprintf("ALTER INDEX %s RENAME TO %s", pgx.Identifier{t.Schema, t.nextSearchIndex(c)}.Sanitize(), ident(t.searchIndex(c))),
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM pgphi.blind_indexes WHERE table_name = $1 AND column_name = $2 AND state = 'active'`, t.QualifiedName(), c.Name); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE pgphi.blind_indexes SET state = 'active', created_at = now() WHERE table_name = $1 AND column_name = $2 AND state = 'building'`, t.QualifiedName(), c.Name); err != nil {
			return err
		}
		space := reindexSpace(t, c, gen)
		if _, err := tx.Exec(ctx, `DELETE FROM pgphi.chunks WHERE plan_id = $1 AND table_name = $2`, r.Plan.ID, space); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM pgphi.plan_tables WHERE plan_id = $1 AND table_name = $2`, r.Plan.ID, space)
		return err
	})
}
