// Package search answers questions about encrypted columns exactly: it finds
// candidate rows through a column's blind index (a GIN index over truncated,
// keyed terms), decrypts each candidate and keeps only true matches, so the
// result has neither the false positives of truncated terms nor false
// negatives. Query values never appear in errors or logs.
package search

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/keys"
)

// Result lists the primary keys of the matching rows, in key order: integer
// key columns compare as numbers, every other key column by the bytes of its
// canonical text (which is the order of text keys under the "C" collation).
type Result struct {
	Table      string     `json:"table"`
	Column     string     `json:"column"`
	KeyColumns []string   `json:"key_columns"`
	Keys       [][]string `json:"keys"`
	Candidates int        `json:"candidates"` // rows the index returned before exact filtering
}

// ErrNotSearchable is returned for a table or column that is not configured
// for search, or not that way.
var ErrNotSearchable = errors.New("not searchable")

// Searcher runs searches against one database with loaded keys.
type Searcher struct {
	Pool *pgxpool.Pool
	Keys *keys.Keyring
	Plan *engine.Plan
	// Settings are set (SET LOCAL) in the search's transaction: the
	// canonical session settings, for a pool whose sessions do not have
	// them (an application's). Key and plaintext texts depend on them.
	Settings map[string]string
	indexers engine.Indexers
	// next are the term computers of generations reindexes are building:
	// their columns are read beside the active ones.
	next engine.Indexers
	// snapshot, when set, is an exported snapshot every Find reads in (the
	// accuracy oracle compares with a plaintext answer read in it).
	snapshot string
}

// New loads the blind index sizing and keys of the plan.
func New(ctx context.Context, pool *pgxpool.Pool, ring *keys.Keyring, p *engine.Plan) (*Searcher, error) {
	ix, err := engine.LoadIndexers(ctx, pool, ring, p)
	if err != nil {
		return nil, err
	}
	next, err := engine.LoadNextIndexers(ctx, pool, ring, p)
	if err != nil {
		return nil, err
	}
	return &Searcher{Pool: pool, Keys: ring, Plan: p, indexers: ix, next: next}, nil
}

// NextIndexer returns the term computer of the generation a reindex is
// building for a column (nil when none is): writers that know it write
// both generations.
func (s *Searcher) NextIndexer(table, column string) *blindindex.Column {
	return s.next.For(table, column)
}

// candidates is the candidate query of q on a column: through the active
// generation's terms, and through the next generation's too while a
// reindex builds one (a row is a candidate through either).
func (s *Searcher) candidates(t *engine.Target, c *engine.TargetColumn, q blindindex.Query) (*blindindex.Plan, candidateQuery, error) {
	plan, err := s.indexers.For(t.QualifiedName(), c.Name).Query(q)
	if err != nil {
		return plan, candidateQuery{}, err
	}
	var nextGroups [][]int64
	if nidx := s.next.For(t.QualifiedName(), c.Name); nidx != nil {
		np, err := nidx.Query(q)
		if err != nil {
			return plan, candidateQuery{}, err
		}
		nextGroups = np.Groups
		if nextGroups == nil {
			nextGroups = [][]int64{}
		}
	}
	return plan, newCandidateQuery(t, c, plan.Groups, nextGroups), nil
}

// Indexer returns the term computer of a searchable column (nil when the
// column has no blind index): the terms of a value, as pgphi writes them.
func (s *Searcher) Indexer(table, column string) *blindindex.Column {
	return s.indexers.For(table, column)
}

// Find returns the rows of table whose column matches q.
func (s *Searcher) Find(ctx context.Context, table, column string, q blindindex.Query) (*Result, error) {
	return s.find(ctx, s.Pool, false, table, column, q)
}

// FindIn is Find inside tx, a transaction of the caller (which may have set
// a role with SET LOCAL ROLE: the candidate query runs with its privileges).
func (s *Searcher) FindIn(ctx context.Context, tx pgx.Tx, table, column string, q blindindex.Query) (*Result, error) {
	return s.find(ctx, tx, true, table, column, q)
}

// batcher sends a batch: a pool or a transaction.
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

func (s *Searcher) find(ctx context.Context, conn batcher, inTx bool, table, column string, q blindindex.Query) (*Result, error) {
	t, c, err := s.target(table, column)
	if err != nil {
		return nil, err
	}
	plan, cq, err := s.candidates(t, c, q)
	if err != nil {
		return nil, err
	}
	res := &Result{Table: t.QualifiedName(), Column: c.Name}
	for _, k := range t.PrimaryKey {
		res.KeyColumns = append(res.KeyColumns, k.Name)
	}
	opener := s.Keys.Opener(t.QualifiedName(), c.Name)
	nk := len(t.PrimaryKey)
	// The candidate query must use the GIN and pending indexes, whatever the
	// table's size (a sequential scan would read every ciphertext), so it runs
	// with enable_seqscan off in a transaction. The statements go in one
	// batch: one round trip, as a plaintext lookup has. In its own
	// transaction, repeatable read, the changed rows and the index's are two
	// statements in one snapshot; in the caller's, one statement.
	//
	// plan_cache_mode = force_generic_plan: the candidate query's shape is
	// fixed and only its terms change, so the prepared statement is planned
	// once per connection instead of at every search (planning an array
	// containment took longer than running it).
	batch := &pgx.Batch{}
	switch {
	case inTx:
		// the caller's transaction: its snapshot and role
	case s.snapshot != "":
		batch.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
		batch.Queue("SET TRANSACTION SNAPSHOT '" + s.snapshot + "'")
	default:
		batch.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	}
	batch.Queue("SELECT pg_catalog.set_config('enable_seqscan', 'off', true), pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true)")
	for _, name := range slices.Sorted(maps.Keys(s.Settings)) {
		batch.Queue("SELECT pg_catalog.set_config($1, $2, true)", name, s.Settings[name])
	}
	// Candidates of one query share few distinct values (a repeated name's
	// rows are one value, the false positives a handful of others), and
	// normalizing a value costs more than decrypting it: each distinct
	// text is matched once.
	matched := make(map[string]bool)
	match := func(text string) bool {
		m, ok := matched[text]
		if !ok {
			m = plan.Match(text)
			if len(matched) < maxMatchMemo {
				matched[text] = m
			}
		}
		return m
	}
	col := &collector{
		match: match,
		open: func(ct []byte, key []string) (string, error) {
			v, err := opener.Open(ct, envelope.Binding{Table: t.QualifiedName(), Column: c.Name, PrimaryKey: key})
			return v.Text, err
		},
		res:    res,
		sorter: runSorter{order: newKeyOrder(t)},
	}
	key := make([]string, nk) // each row's, reused: the collector copies what it keeps
	// rowsOf reads the rows of one statement: key texts, then the columns
	// of its part (candidateQuery).
	rowsOf := func(p part) func(pgx.Rows) error {
		return func(rows pgx.Rows) error {
			for rows.Next() {
				raw := rows.RawValues()
				for i := range nk {
					key[i] = string(raw[i])
				}
				switch {
				case p == changedPart:
					col.changedRow(key, raw[nk])
				case p == indexPart:
					col.indexRow(key, raw[nk])
				case len(raw[nk+2]) == 1 && (raw[nk+2][0] == 1 || raw[nk+2][0] == 't'):
					col.changedRow(key, raw[nk+1])
				default:
					col.indexRow(key, raw[nk])
				}
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("searching %s.%s: %w", t.QualifiedName(), c.Name, err)
			}
			return nil
		}
	}
	if inTx {
		batch.Queue(cq.union(), cq.args...).Query(rowsOf(bothParts))
		batch.Queue("SET LOCAL enable_seqscan TO DEFAULT")
	} else {
		if changed := cq.changed(); changed != "" {
			batch.Queue(changed).Query(rowsOf(changedPart))
		}
		batch.Queue(cq.index(), cq.args...).Query(rowsOf(indexPart))
		batch.Queue("COMMIT")
	}
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return nil, err
	}
	if u := col.finish(); u != nil {
		return nil, fmt.Errorf("%s.%s: ciphertext does not decrypt: %w (at key (%s))", t.QualifiedName(), c.Name, u.err, strings.Join(u.key, ", "))
	}
	return res, nil
}

// maxMatchMemo bounds the texts one search remembers the match of.
const maxMatchMemo = 4096

// ExplainCandidates returns PostgreSQL's plan of the candidate query, for
// checking that every kind of search is index-backed.
func (s *Searcher) ExplainCandidates(ctx context.Context, table, column string, q blindindex.Query) (string, error) {
	return s.explain(ctx, table, column, q, "EXPLAIN ")
}

// ExplainAnalyzeCandidates runs the candidate query under EXPLAIN (ANALYZE,
// BUFFERS) and returns the plan with its timings (the plan shows terms,
// never values), for investigating search latency.
func (s *Searcher) ExplainAnalyzeCandidates(ctx context.Context, table, column string, q blindindex.Query) (string, error) {
	return s.explain(ctx, table, column, q, "EXPLAIN (ANALYZE, BUFFERS) ")
}

// CandidateQuery returns the candidate query of q and its arguments (terms,
// never the value), for diagnostics and benchmarks; Find runs it with
// enable_seqscan off in a read-only transaction.
func (s *Searcher) CandidateQuery(table, column string, q blindindex.Query) (string, []any, error) {
	t, c, err := s.target(table, column)
	if err != nil {
		return "", nil, err
	}
	_, cq, err := s.candidates(t, c, q)
	return cq.union(), cq.args, err
}

func (s *Searcher) explain(ctx context.Context, table, column string, q blindindex.Query, explain string) (string, error) {
	t, c, err := s.target(table, column)
	if err != nil {
		return "", err
	}
	_, cq, err := s.candidates(t, c, q)
	if err != nil {
		return "", err
	}
	sql, args := cq.union(), cq.args
	var lines []string
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, explain+sql, args...)
		if err != nil {
			return err
		}
		lines, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return strings.Join(lines, "\n"), err
}

func (s *Searcher) target(table, column string) (*engine.Target, *engine.TargetColumn, error) {
	for _, t := range s.Plan.Tables {
		if t.QualifiedName() != table && !(t.Schema == "public" && t.Name == table) {
			continue
		}
		for i := range t.Columns {
			c := &t.Columns[i]
			if c.Name != column {
				continue
			}
			if !c.HasIndex() {
				return nil, nil, fmt.Errorf("%w: %s.%s has no search kinds configured", ErrNotSearchable, t.QualifiedName(), c.Name)
			}
			return t, c, nil
		}
		var names []string
		for _, c := range t.Columns {
			if c.HasIndex() {
				names = append(names, c.Name)
			}
		}
		return nil, nil, fmt.Errorf("%w: %s has no protected column `%s` (searchable columns: %s)", ErrNotSearchable, t.QualifiedName(), column, strings.Join(names, ", "))
	}
	var names []string
	for _, t := range s.Plan.Tables {
		names = append(names, t.QualifiedName())
	}
	return nil, nil, fmt.Errorf("%w: table `%s` is not in the config (protected tables: %s)", ErrNotSearchable, table, strings.Join(names, ", "))
}

// candidateQuery finds a query's candidates in two parts: the rows the
// application changed since they were encrypted (their ciphertext and terms
// may be cleared or stale; their plaintext is current), none after cleanup,
// and the rows whose terms overlap every group. Run as two statements they
// must share one snapshot; a transaction of the caller's, whose isolation
// level may give two statements two snapshots, runs them as one (union).
//
// The index part does not read the marker: it is the table's last column,
// and reaching it in every candidate (PostgreSQL walks a row's columns in
// order) cost a quarter of an exact query on a repeated value. No ORDER BY:
// the candidates are a superset of the matches (about twice as many under
// the privacy budget), and sorting them in the server by a text key's
// collation cost more than fetching them; find sorts the matches while
// they arrive.
type candidateQuery struct {
	keys, table, ciphertext, where string
	plaintext, marker              string // "" after cleanup
	args                           []any
}

// part names the statement a row came from.
type part int

const (
	bothParts   part = iota // union: the row says which part it is from
	changedPart             // changed
	indexPart               // index
)

// newCandidateQuery builds the query. nextGroups, when not nil, are the
// groups of the generation a reindex is building, matched against its
// column: a row is a candidate through either.
func newCandidateQuery(t *engine.Target, c *engine.TargetColumn, groups, nextGroups [][]int64) candidateQuery {
	q := candidateQuery{keys: strings.Join(t.KeyTexts(), ", "), table: t.Ident(), ciphertext: pgx.Identifier{c.Encrypted}.Sanitize()}
	q.where = termConds(c.Index, groups, &q.args)
	if nextGroups != nil {
		q.where = "(" + q.where + ") OR (" + termConds(c.NextIndex(), nextGroups, &q.args) + ")"
	}
	if !c.Cleaned {
		// After cleanup there is no plaintext and no marker: applications
		// write ciphertext and terms together.
		q.plaintext, q.marker = pgx.Identifier{c.Name}.Sanitize(), pgx.Identifier{engine.MarkerColumn}.Sanitize()
	}
	return q
}

// changed selects key texts and plaintext of the changed rows; "" after
// cleanup.
func (q candidateQuery) changed() string {
	if q.marker == "" {
		return ""
	}
	return fmt.Sprintf("SELECT %s, %s::text FROM %s WHERE %s", q.keys, q.plaintext, q.table, q.marker)
}

// index selects key texts and ciphertext of the index's candidates.
func (q candidateQuery) index() string {
	return fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s", q.keys, q.ciphertext, q.table, q.where)
}

// union is both parts as one statement, changed rows first: key texts,
// ciphertext, plaintext and whether the row is a changed one.
func (q candidateQuery) union() string {
	index := fmt.Sprintf("SELECT %s, %s, NULL::text, false FROM %s WHERE %s", q.keys, q.ciphertext, q.table, q.where)
	if q.marker == "" {
		return index
	}
	return fmt.Sprintf("SELECT %s, NULL::bytea, %s::text, true FROM %s WHERE %s UNION ALL %s", q.keys, q.plaintext, q.table, q.marker, index)
}

// termConds is the condition that a row's terms in column overlap every
// group, its parameters appended to args.
func termConds(column string, groups [][]int64, args *[]any) string {
	var conds []string
	// Groups of one term are ANDed in one containment (@>), which GIN
	// answers by intersecting posting lists, rarest first; groups of
	// several terms (an OR) each need an overlap (&&).
	var all []int64
	for _, g := range groups {
		if len(g) == 1 {
			all = append(all, g[0])
			continue
		}
		*args = append(*args, slices.Clone(g))
		// OPERATOR(pg_catalog.&&): an overlap operator another role defined
		// for bigint[] (in public, say) would be the better match by type;
		// pgphi's session pins search_path, and this names the operator.
		conds = append(conds, fmt.Sprintf("%s OPERATOR(pg_catalog.&&) $%d::pg_catalog.int8[]", pgx.Identifier{column}.Sanitize(), len(*args)))
	}
	if len(all) > 0 {
		*args = append(*args, all)
		conds = append(conds, fmt.Sprintf("%s OPERATOR(pg_catalog.@>) $%d::pg_catalog.int8[]", pgx.Identifier{column}.Sanitize(), len(*args)))
	}
	if len(conds) == 0 {
		return "false" // an empty group matches nothing
	}
	return strings.Join(conds, " AND ")
}
