package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/keys"
	"github.com/pgphi/pgphi/unique"
)

// UniqueColumn is a unique rule (UNIQUE, primary key or unique index) on
// protected columns that pgphi enforces on the ciphertext side: a
// <col>_uniq bytea column holding unique.Digest of the rule's members, with
// a unique index of its own (same predicate; NULL semantics through the
// digest), and a CHECK that a row holding the members' ciphertexts holds
// the digest too. The plaintext's own constraint keeps working until
// cleanup drops it; from then on the digest column alone refuses a
// duplicate.
type UniqueColumn struct {
	Column           string   // the digest column
	Object, Kind     string   // the original constraint or index, and its kind
	Members          []string // protected columns of the rule, in order
	MemberTypes      []string // their base types (unique.EqualityText)
	NullsNotDistinct bool
	Predicate        string // partial index predicate, "" when none
	Index            string // pgphi's unique index on Column
	KeyID            uint32 // data key the digest key derives from

	members []int // indices of Members in the target's Columns
}

// uniqueIndexName names pgphi's unique index on a digest column.
func (t *Target) uniqueIndexName(col string) string {
	return objectName("pgphi_uniq_", t.QualifiedName()+"."+col)
}

// uniquePresentCheck names the CHECK that a row holding its members'
// ciphertexts holds the digest: a writer cannot leave it out to slip a
// duplicate past the index.
func (t *Target) uniquePresentCheck(col string) string {
	return objectName(catalog.PgphiConstraintPrefix+"uniq_", t.QualifiedName()+"."+col)
}

// bind resolves the members to the target's columns.
func (t *Target) bindUniques() error {
	for i := range t.Uniques {
		u := &t.Uniques[i]
		u.members = u.members[:0]
		for _, m := range u.Members {
			j := slices.IndexFunc(t.Columns, func(c TargetColumn) bool { return c.Name == m })
			if j < 0 {
				return fmt.Errorf("unique rule %s of %s names %s, which is not protected", u.Object, t.QualifiedName(), m)
			}
			u.members = append(u.members, j)
		}
	}
	return nil
}

// loadUniques reads t's unique rules from pgphi's state, once.
func (t *Target) loadUniques(ctx context.Context, q catalog.Querier) error {
	if t.uniquesLoaded {
		return nil
	}
	var exists bool
	if err := q.QueryRow(ctx, "SELECT pg_catalog.to_regclass('pgphi.unique_columns') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("reading the unique rules of %s: %w", t.QualifiedName(), err)
	}
	if !exists {
		t.uniquesLoaded = true
		return nil
	}
	rows, err := q.Query(ctx, `SELECT uniq_column, object_name, kind, members, member_types, nulls_not_distinct, COALESCE(predicate, ''), index_name, key_id
		FROM pgphi.unique_columns WHERE table_name OPERATOR(pg_catalog.=) $1 ORDER BY uniq_column`, t.QualifiedName())
	if err != nil {
		return fmt.Errorf("reading the unique rules of %s: %w", t.QualifiedName(), err)
	}
	us, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UniqueColumn, error) {
		var u UniqueColumn
		var key int32
		err := r.Scan(&u.Column, &u.Object, &u.Kind, &u.Members, &u.MemberTypes, &u.NullsNotDistinct, &u.Predicate, &u.Index, &key)
		u.KeyID = uint32(key)
		return u, err
	})
	if err != nil {
		return fmt.Errorf("reading the unique rules of %s: %w", t.QualifiedName(), err)
	}
	t.Uniques, t.uniquesLoaded = us, true
	return t.bindUniques()
}

// LoadUniques reads the unique rules of every table of p from pgphi's state.
func LoadUniques(ctx context.Context, q catalog.Querier, p *Plan) error {
	for _, t := range p.Tables {
		if err := t.loadUniques(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// planUniques merges the rules pgphi's state records for t with those the
// catalog shows on its plaintext now (a rule added since the last apply is
// carried from this apply on), each new one keyed by the active data key.
// A rule pgphi cannot carry is left to the dependency check (cleanup
// refuses it).
func (r *Runner) planUniques(ctx context.Context, t *Target) error {
	t.uniquesLoaded = false
	if err := t.loadUniques(ctx, r.Pool); err != nil {
		return err
	}
	rules, err := catalog.UniqueRules(ctx, r.Pool, t.Table)
	if err != nil {
		return err
	}
	names := catalog.UniqColumns(rules)
	for i, u := range rules {
		if names[i] == "" || slices.ContainsFunc(t.Uniques, func(x UniqueColumn) bool { return x.Object == u.Object || x.Column == names[i] }) {
			continue
		}
		if _, clash := t.Column(names[i]); clash {
			return fmt.Errorf("%w: table %s already has a column %q, where pgphi would put the digest that enforces %s %s", ErrRefused, t.QualifiedName(), names[i], u.Kind, u.Object)
		}
		if len(names[i]) > 63 {
			return fmt.Errorf("%w: the digest column %q for %s %s of %s is longer than 63 bytes: rename the column", ErrRefused, names[i], u.Kind, u.Object, t.QualifiedName())
		}
		t.Uniques = append(t.Uniques, UniqueColumn{Column: names[i], Object: u.Object, Kind: u.Kind, Members: u.Members, MemberTypes: u.MemberTypes,
			NullsNotDistinct: u.NullsNotDistinct, Predicate: u.Predicate, Index: t.uniqueIndexName(names[i]), KeyID: r.Keys.ActiveKeyID()})
	}
	slices.SortFunc(t.Uniques, func(a, b UniqueColumn) int { return strings.Compare(a.Column, b.Column) })
	return t.bindUniques()
}

// recordUniques stores t's unique rules (expand's transaction).
func (t *Target) recordUniques(ctx context.Context, tx pgx.Tx) error {
	for _, u := range t.Uniques {
		var pred *string
		if u.Predicate != "" {
			pred = &u.Predicate
		}
		if _, err := tx.Exec(ctx, `INSERT INTO pgphi.unique_columns (table_name, uniq_column, object_name, kind, members, member_types, nulls_not_distinct, predicate, index_name, key_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (table_name, uniq_column) DO NOTHING`,
			t.QualifiedName(), u.Column, u.Object, u.Kind, u.Members, u.MemberTypes, u.NullsNotDistinct, pred, u.Index, int32(u.KeyID)); err != nil {
			return fmt.Errorf("recording unique rule %s of %s: %w", u.Object, t.QualifiedName(), err)
		}
	}
	return nil
}

// uniqueExpandSQL adds the digest columns and their CHECKs (NOT VALID: no
// scan; every row is verified). Until cleanup a row that still holds a
// plaintext member is exempt: its digest may wait for the catch-up (the
// plaintext's own constraint holds meanwhile), and rows backfilled before
// the digest column existed stay writable. Built-in syntax only: the check
// runs as the writer.
func (t *Target) uniqueExpandSQL() []string {
	var out []string
	for _, u := range t.Uniques {
		out = append(out,
			fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s bytea", t.Ident(), ident(u.Column)),
			fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Ident(), ident(t.uniquePresentCheck(u.Column))),
			t.uniquePresentCheckSQL(&u, true))
	}
	return out
}

// uniquePresentCheckSQL adds the CHECK that a row holding its members'
// ciphertexts holds the digest; withPlaintext exempts rows that hold a
// plaintext member (before cleanup).
func (t *Target) uniquePresentCheckSQL(u *UniqueColumn, withPlaintext bool) string {
	preds := []string{ident(u.Column) + " IS NOT NULL"}
	var encNull []string
	for _, j := range u.members {
		encNull = append(encNull, ident(t.Columns[j].Encrypted)+" IS NULL")
		if withPlaintext {
			preds = append(preds, ident(t.Columns[j].Name)+" IS NOT NULL")
		}
	}
	switch {
	case !u.NullsNotDistinct:
		// A tuple with a NULL member has no digest.
		preds = append(preds, encNull...)
	case withPlaintext:
		// NULLs have a digest too; before cleanup a row the application
		// wrote without any ciphertext gets its digest from the sweep.
		preds = append(preds, "("+strings.Join(encNull, " AND ")+")")
	}
	// After cleanup under NULLS NOT DISTINCT: every row holds a digest.
	return fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s) NOT VALID", t.Ident(), ident(t.uniquePresentCheck(u.Column)), strings.Join(preds, " OR "))
}

// uniqueKeys derives the digest keys of t's rules.
func uniqueKeys(ring *keys.Keyring, t *Target) ([][]byte, error) {
	out := make([][]byte, len(t.Uniques))
	for i, u := range t.Uniques {
		k, err := ring.PurposeKeyFor(u.KeyID, keys.PurposeUnique, t.QualifiedName(), u.Column)
		if err != nil {
			return nil, fmt.Errorf("digest key of %s.%s: %w", t.QualifiedName(), u.Column, err)
		}
		out[i] = k
	}
	return out, nil
}

// digest computes a rule's digest from its members' canonical texts (nil
// for NULL), indexed like t.Columns.
func (u *UniqueColumn) digest(key []byte, texts [][]byte) []byte {
	members := make([]*string, len(u.members))
	for i, j := range u.members {
		if texts[j] != nil {
			s := unique.EqualityText(u.MemberTypes[i], string(texts[j]))
			members[i] = &s
		}
	}
	return unique.Digest(key, !u.NullsNotDistinct, members)
}

// anyMemberSealedOnly is true when a member of u holds its value only as a
// ciphertext (the application wrote it after cutover): the backfill then
// keeps the digest the application wrote with it, which it cannot
// recompute from plaintexts.
func (t *Target) anyMemberSealedOnly(u *UniqueColumn, qual string) string {
	var parts []string
	for _, j := range u.members {
		parts = append(parts, fmt.Sprintf("(%[1]s%[2]s IS NULL AND %[1]s%[3]s IS NOT NULL)", qual, ident(t.Columns[j].Name), ident(t.Columns[j].Encrypted)))
	}
	return strings.Join(parts, " OR ")
}

// uniqueIncomplete is true for a row whose plaintext members need a digest
// it does not have: every member a value (NULLS DISTINCT), or any row whose
// members are not held as ciphertext only (NULLS NOT DISTINCT: NULLs have
// a digest too).
func (t *Target) uniqueIncomplete(u *UniqueColumn) string {
	if u.NullsNotDistinct {
		return fmt.Sprintf("(%s IS NULL AND NOT (%s))", ident(u.Column), t.anyMemberSealedOnly(u, ""))
	}
	var parts []string
	for _, j := range u.members {
		parts = append(parts, ident(t.Columns[j].Name)+" IS NOT NULL")
	}
	return fmt.Sprintf("((%s) AND %s IS NULL)", strings.Join(parts, " AND "), ident(u.Column))
}

// ProblemUniq is a verification problem of a digest column.
const ProblemUniq = "unique digest does not match the value"

// uniqueNotReady says why t's unique rules are not enforced on the
// ciphertext side yet ("" when they are): a rule the catalog shows that
// pgphi carries but has not recorded (added since the last apply), or a
// digest index missing or invalid. Cleanup refuses then: dropping the
// plaintext would drop the only enforcement.
func (t *Target) uniqueNotReady(ctx context.Context, q catalog.Querier) (string, error) {
	t.uniquesLoaded = false
	if err := t.loadUniques(ctx, q); err != nil {
		return "", err
	}
	rules, err := catalog.UniqueRules(ctx, q, t.Table)
	if err != nil {
		return "", err
	}
	names := catalog.UniqColumns(rules)
	for i, u := range rules {
		if names[i] != "" && !slices.ContainsFunc(t.Uniques, func(x UniqueColumn) bool { return x.Object == u.Object }) {
			return fmt.Sprintf("%s %s is not carried to a digest column yet (an apply carries it)", u.Kind, u.Object), nil
		}
	}
	for _, u := range t.Uniques {
		var valid bool
		err := q.QueryRow(ctx, `SELECT COALESCE((SELECT i.indisvalid AND i.indisunique FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
			WHERE i.indrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND c.relname OPERATOR(pg_catalog.=) $2), false)`, t.Ident(), u.Index).Scan(&valid)
		if err != nil {
			return "", err
		}
		if !valid {
			return fmt.Sprintf("the unique index %s on %s, which enforces %s %s, is missing or invalid (an apply builds it)", u.Index, u.Column, u.Kind, u.Object), nil
		}
	}
	return "", nil
}

// Digest is the rule's digest of a row's values: texts holds, indexed like
// the target's Columns, each member's canonical text (nil for NULL).
func (u *UniqueColumn) Digest(key []byte, texts [][]byte) []byte { return u.digest(key, texts) }

// UniqueKey derives the digest key of u, a rule of t.
func UniqueKey(ring *keys.Keyring, t *Target, u *UniqueColumn) ([]byte, error) {
	return ring.PurposeKeyFor(u.KeyID, keys.PurposeUnique, t.QualifiedName(), u.Column)
}

// duplicateError names the rows behind a unique violation of a digest
// index while a batch was written: a value the application wrote once as
// plaintext and once as ciphertext only, before require_encryption, where
// the plaintext's own constraint could not compare them. nil when it finds
// none (the caller returns the database's error then).
//
// The batch has n rows: key(i) is row i's key, digest(i, j) its digest
// under rule j (nil for none).
func (t *Target) duplicateError(ctx context.Context, tx pgx.Tx, n int, key func(i int) []string, digest func(i, j int) []byte) error {
	for j := range t.Uniques {
		u := &t.Uniques[j]
		var digests [][]byte
		seen := map[string][]string{}
		for i := range n {
			d := digest(i, j)
			if d == nil {
				continue
			}
			if other, dup := seen[string(d)]; dup {
				return u.duplicate(t, key(i), other)
			}
			seen[string(d)] = key(i)
			digests = append(digests, d)
		}
		if len(digests) == 0 {
			continue
		}
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s, ARRAY[%s] FROM %s WHERE %s = ANY($1)",
			ident(u.Column), t.keyTextList(), t.Ident(), ident(u.Column)), digests)
		if err != nil {
			return nil
		}
		for rows.Next() {
			var d []byte
			var key []string
			if err := rows.Scan(&d, &key); err != nil {
				break
			}
			if mine, ok := seen[string(d)]; ok && !slices.Equal(mine, key) {
				rows.Close()
				return u.duplicate(t, mine, key)
			}
		}
		rows.Close()
	}
	return nil
}

// duplicateRows names two rows that share a digest (the unique index on it
// could not be built); nil when it finds none.
func (t *Target) duplicateRows(ctx context.Context, q catalog.Querier, u *UniqueColumn) error {
	pred := ""
	if u.Predicate != "" {
		pred = " AND (" + u.Predicate + ")"
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT ARRAY[%[1]s] FROM %[2]s WHERE %[3]s IN
		(SELECT %[3]s FROM %[2]s WHERE %[3]s IS NOT NULL%[4]s GROUP BY 1 HAVING count(*) > 1 LIMIT 1)%[4]s ORDER BY %[5]s LIMIT 2`,
		t.keyTextList(), t.Ident(), ident(u.Column), pred, t.keyList("")))
	if err != nil {
		return nil
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[[]string])
	if err != nil || len(keys) < 2 {
		return nil
	}
	return u.duplicate(t, keys[1], keys[0])
}

func (u *UniqueColumn) duplicate(t *Target, key, other []string) error {
	return &RowError{Table: t.QualifiedName(), Column: strings.Join(u.Members, ", "), Key: key, KeyColumns: t.keyNames(),
		Reason: fmt.Sprintf("its value duplicates the row at key (%s) under %s %s (one of them was written as ciphertext only, where the plaintext's constraint could not compare them); remove or change one",
			strings.Join(other, ", "), u.Kind, u.Object)}
}

// keyTextList is the key columns' canonical texts, for an ARRAY[...].
func (t *Target) keyTextList() string {
	parts := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		parts[i] = ident(k.Name) + "::text"
	}
	return strings.Join(parts, ", ")
}
