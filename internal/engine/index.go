package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/keys"
)

// IndexSuffix names the blind index column of a protected column: <column>_bidx.
const IndexSuffix = "_bidx"

// Querier runs queries: a pool, a connection or a transaction. A nil Querier
// means "no pgphi state yet".
type Querier interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}

// IndexSpec is one blind index term family of a column, as planned or stored.
type IndexSpec struct {
	Table, Column string
	SubKind       blindindex.SubKind
	Bits          int
	KeyID         uint32 // 0 until stored
	Rows          int64  // rows the planner sized it for
	Stored        bool
	Overridden    bool // bits set in the config
	// Sizing says how Bits was chosen (SizedByRows, SizedByDistinct,
	// SizedByConfig); for SizedByDistinct, Values is the distinct messages
	// of the family, ColumnValues the column's distinct values and
	// ValuesPerArray the expected distinct values sharing one term array.
	Sizing         string
	Values         int64
	ColumnValues   int64
	ValuesPerArray float64
	// Generation is the term generation (1 for apply's; each reindex
	// takes the next).
	Generation int
	// Options are the column's term options recorded with the family
	// (pgphi.blind_indexes.options); nil when not stored, or stored by a
	// version before 0013 and not yet filled in.
	Options *blindindex.StoredOptions
}

// ExpectedCoincidences is how many distinct values are expected to share
// one term: measured distinct values / 2^bits when sized from the data, else
// the rows planner's estimate.
func (s IndexSpec) ExpectedCoincidences(termsPerRow float64) float64 {
	if s.Sizing == SizedByDistinct {
		return math.Ldexp(float64(s.Values), -s.Bits)
	}
	return blindindex.ExpectedCoincidences(s.Rows, termsPerRow, s.Bits)
}

func searchKinds(names []string) []blindindex.Kind {
	out := make([]blindindex.Kind, len(names))
	for i, n := range names {
		out[i] = blindindex.Kind(n)
	}
	return out
}

func searchOptions(o config.SearchOptions) blindindex.Options {
	bo := blindindex.Defaults()
	bo.PrefixMin, bo.PrefixMax, bo.TokenSize, bo.PhoneRegion = o.PrefixMin, o.PrefixMax, o.TokenSize, o.PhoneRegion
	if o.FoldAccents != nil {
		bo.FoldAccents = *o.FoldAccents
	}
	return bo
}

// termsPerRow is the planner's estimate of terms of one sub-kind per value.
func termsPerRow(sub blindindex.SubKind, avgRunes float64, o blindindex.Options) float64 {
	return blindindex.TermsPerRow(sub, avgRunes, o)
}

// IndexSpecs lists every blind index term family of the plan: the stored
// sizing when the column was already indexed, else the planner's proposal for
// the table's current row count (or the config's override).
func IndexSpecs(ctx context.Context, q Querier, p *Plan) ([]IndexSpec, error) {
	stored, err := storedSpecs(ctx, q, GenerationActive)
	if err != nil {
		return nil, err
	}
	var out []IndexSpec
	for _, t := range p.Tables {
		for _, c := range t.Columns {
			for _, sub := range c.SubKinds() {
				if s, ok := stored[t.QualifiedName()+"\x00"+c.Name+"\x00"+string(sub)]; ok {
					out = append(out, s)
					continue
				}
				s := IndexSpec{Table: t.QualifiedName(), Column: c.Name, SubKind: sub, Rows: max(t.EstimatedRows, 1), Sizing: SizedByRows}
				z, measured := p.sizing[indexerKey(t.QualifiedName(), c.Name)]
				if b, ok := c.BitsOverride[string(sub)]; ok {
					s.Bits, s.Overridden, s.Sizing = b, true, SizedByConfig
				} else {
					s.Bits = blindindex.Bits(s.Rows, termsPerRow(sub, 8, c.SearchOptions))
					for _, f := range z.Families {
						if measured && f.SubKind == sub {
							s.Bits, s.Values, s.Sizing, s.Rows = f.Bits, f.Values, SizedByDistinct, max(z.Rows, 1)
						}
					}
				}
				if measured {
					s.ColumnValues, s.ValuesPerArray = z.Values, z.ValuesPerSet
				}
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// Generation states in pgphi.blind_indexes.state.
const (
	GenerationActive   = "active"   // the terms in <col>_bidx, used by search and writers
	GenerationBuilding = "building" // the terms a reindex writes into <col>_bidx_next
)

// storedSpecs reads the recorded term families of one generation state,
// keyed "table\x00column\x00sub_kind". A nil Querier, or no pgphi state
// yet, yields none.
func storedSpecs(ctx context.Context, q Querier, state string) (map[string]IndexSpec, error) {
	stored := map[string]IndexSpec{}
	if q == nil {
		return stored, nil
	}
	rows, err := q.Query(ctx, `SELECT table_name, column_name, sub_kind, bits, key_id, rows_planned, options::text,
		sizing, COALESCE(distinct_values, 0), COALESCE(column_values, 0), COALESCE(values_per_array, 0), generation
		FROM pgphi.blind_indexes WHERE state = $1`, state)
	if err != nil {
		// No state yet (a plan before the first apply).
		return stored, nil
	}
	defer rows.Close()
	for rows.Next() {
		var s IndexSpec
		var sub string
		var kid int32
		var opts *string
		if err := rows.Scan(&s.Table, &s.Column, &sub, &s.Bits, &kid, &s.Rows, &opts, &s.Sizing, &s.Values, &s.ColumnValues, &s.ValuesPerArray, &s.Generation); err != nil {
			return nil, err
		}
		if opts != nil {
			o, err := blindindex.ParseStoredOptions([]byte(*opts))
			if err != nil {
				return nil, fmt.Errorf("pgphi.blind_indexes options of %s.%s (%s): %w", s.Table, s.Column, sub, err)
			}
			s.Options = &o
		}
		s.SubKind, s.KeyID, s.Stored = blindindex.SubKind(sub), uint32(kid), true
		stored[s.Table+"\x00"+s.Column+"\x00"+sub] = s
	}
	return stored, rows.Err()
}

// SubKinds lists the term families of a column's configured search kinds.
func (c *TargetColumn) SubKinds() []blindindex.SubKind {
	if len(c.Search) == 0 {
		return nil
	}
	return blindindex.SubKinds(c.Search, c.SearchOptions)
}

// HasIndex reports whether the column has any blind index.
func (c *TargetColumn) HasIndex() bool { return len(c.Search) > 0 }

// checkBitsOverrides refuses bits for sub-kinds the column does not have.
func checkBitsOverrides(cfg *config.Config, t *Target) error {
	for i, c := range t.Columns {
		subs := c.SubKinds()
		for name := range c.BitsOverride {
			if !slices.Contains(subs, blindindex.SubKind(name)) {
				var names []string
				for _, s := range subs {
					names = append(names, string(s))
				}
				return cfg.Errorf(t.Config.Columns[i].Line, fmt.Sprintf("bits can be set for: %v", names),
					"search_options.bits names %q, which column %s.%s does not index", name, t.QualifiedName(), c.Name)
			}
		}
	}
	return nil
}

// Indexers builds the term computers of every indexed column, keyed by
// "schema.table\x00column", from the stored sizing and keys.
type Indexers map[string]*blindindex.Column

func indexerKey(table, column string) string { return table + "\x00" + column }

// For returns the indexer of a column, or nil when it has no blind index.
func (ix Indexers) For(table, column string) *blindindex.Column { return ix[indexerKey(table, column)] }

// LoadIndexers reads the stored sizing and derives each sub-kind's HMAC key
// from the data key it was built with.
func LoadIndexers(ctx context.Context, q Querier, ring *keys.Keyring, p *Plan) (Indexers, error) {
	specs, err := IndexSpecs(ctx, q, p)
	if err != nil {
		return nil, err
	}
	for _, s := range specs {
		if !s.Stored {
			return nil, withNextStep(fmt.Errorf("blind index %s.%s (%s) is not set up yet", s.Table, s.Column, s.SubKind), OpApply)
		}
	}
	return buildIndexers(specs, ring, p)
}

// buildIndexers derives the term computers of specs; a family not stored
// yet uses the active data key (as its first apply would).
func buildIndexers(specs []IndexSpec, ring *keys.Keyring, p *Plan) (Indexers, error) {
	byCol := map[string][]IndexSpec{}
	for _, s := range specs {
		if !s.Stored {
			s.KeyID = ring.ActiveKeyID()
		}
		byCol[indexerKey(s.Table, s.Column)] = append(byCol[indexerKey(s.Table, s.Column)], s)
	}
	out := Indexers{}
	for _, t := range p.Tables {
		for _, c := range t.Columns {
			if !c.HasIndex() {
				continue
			}
			keyMap := map[blindindex.SubKind][]byte{}
			bits := map[blindindex.SubKind]int{}
			opts, err := recordedOptions(t, &c, byCol[indexerKey(t.QualifiedName(), c.Name)])
			if err != nil {
				return nil, err
			}
			for _, s := range byCol[indexerKey(t.QualifiedName(), c.Name)] {
				k, err := ring.PurposeKeyFor(s.KeyID, keys.PurposeBlindIndex, t.QualifiedName(), c.Name, string(s.SubKind))
				if err != nil {
					return nil, err
				}
				keyMap[s.SubKind], bits[s.SubKind] = k, s.Bits
			}
			col, err := blindindex.NewColumn(c.Search, opts, keyMap, bits)
			if err != nil {
				return nil, fmt.Errorf("blind index of %s.%s: %w", t.QualifiedName(), c.Name, err)
			}
			out[indexerKey(t.QualifiedName(), c.Name)] = col
		}
	}
	return out, nil
}

// ErrOptionsChanged is returned when the config's term options of an
// indexed column differ from the options recorded when it was first indexed.
var ErrOptionsChanged = errors.New("search options differ from those the column was indexed with")

// recordedOptions returns the term options a column's terms are computed
// with: those recorded in pgphi.blind_indexes (every family of a column
// records the same). The config's options must give the same terms: a
// difference is refused, naming each option, because the stored terms would
// no longer match the queries (changing them needs a reindex). A column
// whose rows predate 0013 and were not filled yet uses the config's options,
// as earlier versions did.
func recordedOptions(t *Target, c *TargetColumn, specs []IndexSpec) (blindindex.Options, error) {
	var rec *blindindex.StoredOptions
	for _, s := range specs {
		if s.Options == nil {
			continue
		}
		if rec != nil && *rec != *s.Options {
			return blindindex.Options{}, fmt.Errorf("pgphi.blind_indexes records different options for the families of %s.%s", t.QualifiedName(), c.Name)
		}
		rec = s.Options
	}
	if rec == nil {
		return c.SearchOptions, nil
	}
	if d := blindindex.OptionDifferences(c.Search, rec.Options(), c.SearchOptions); len(d) > 0 {
		return blindindex.Options{}, fmt.Errorf("blind index of %s.%s: %w (%s); the recorded options are kept: restore them in the config (search_options), or rebuild the column's terms", t.QualifiedName(), c.Name, ErrOptionsChanged, strings.Join(d, "; "))
	}
	return rec.Options(), nil
}

// indexPlanStep fixes the sizing and key of every blind index the first time
// the plan is applied, so that every term ever written is comparable.
type indexPlanStep struct{}

func (indexPlanStep) Describe() string {
	return "size blind indexes: count distinct values per term family in one pass, fix each family's truncation (>= 2 distinct values per term and per term array) and key"
}

func (indexPlanStep) Run(ctx context.Context, r *Runner) error {
	// Columns indexed for the first time are sized from their values now;
	// the sizing is then fixed with the bits.
	if err := SizeColumns(ctx, r.Pool, r.Keys, r.Plan, r.Config != nil && r.Config.IsProduction()); err != nil {
		return err
	}
	specs, err := IndexSpecs(ctx, r.Pool, r.Plan)
	if err != nil {
		return err
	}
	// Refuse a config whose options differ from the recorded ones before
	// anything is written.
	byCol := map[string][]IndexSpec{}
	for _, s := range specs {
		byCol[indexerKey(s.Table, s.Column)] = append(byCol[indexerKey(s.Table, s.Column)], s)
	}
	opts := map[string]blindindex.Options{}
	for _, t := range r.Plan.Tables {
		for i := range t.Columns {
			c := &t.Columns[i]
			if !c.HasIndex() {
				continue
			}
			o, err := recordedOptions(t, c, byCol[indexerKey(t.QualifiedName(), c.Name)])
			if err != nil {
				return err
			}
			opts[indexerKey(t.QualifiedName(), c.Name)] = o
		}
	}
	for _, s := range specs {
		o := string(opts[indexerKey(s.Table, s.Column)].Stored().JSON())
		if s.Stored {
			// Rows written before 0013 whose plan could not be found: record
			// the options in use now, which are the ones their terms used.
			if s.Options == nil {
				if _, err := r.Pool.Exec(ctx, `UPDATE pgphi.blind_indexes SET options = $4::jsonb
					WHERE table_name = $1 AND column_name = $2 AND sub_kind = $3 AND options IS NULL`, s.Table, s.Column, string(s.SubKind), o); err != nil {
					return fmt.Errorf("recording blind index options: %w", err)
				}
			}
			continue
		}
		var values, colValues *int64
		var perArray *float64
		if s.Sizing == SizedByDistinct {
			values, colValues, perArray = &s.Values, &s.ColumnValues, &s.ValuesPerArray
		}
		if _, err := r.Pool.Exec(ctx, `INSERT INTO pgphi.blind_indexes (table_name, column_name, sub_kind, bits, key_id, rows_planned, options, format_version,
				sizing, distinct_values, column_values, values_per_array)
			VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`, s.Table, s.Column, string(s.SubKind), s.Bits, r.Keys.ActiveKeyID(), s.Rows, o, blindindex.FormatVersion,
			s.Sizing, values, colValues, perArray); err != nil {
			return fmt.Errorf("recording blind index sizing: %w", err)
		}
	}
	if r.indexers, err = LoadIndexers(ctx, r.Pool, r.Keys, r.Plan); err != nil {
		return err
	}
	r.nextIndexers, err = LoadNextIndexers(ctx, r.Pool, r.Keys, r.Plan)
	return err
}

func (t *Target) searchIndex(c *TargetColumn) string {
	return objectName("pgphi_bidx_", t.QualifiedName()+"."+c.Name)
}

// SearchIndexName is the GIN index of a column's blind index terms.
func (t *Target) SearchIndexName(c *TargetColumn) string { return t.searchIndex(c) }

// IndexReport is the plan's blind index sizing for JSON output.
func (p *Plan) IndexReport() []map[string]any {
	var out []map[string]any
	for _, s := range p.indexSpecs {
		m := map[string]any{"table": s.Table, "column": s.Column, "terms": s.SubKind, "bits": s.Bits,
			"expected_coincidences": math.Round(s.coincidences*10) / 10, "rows": s.Rows, "fixed": s.Stored, "sizing": s.Sizing}
		if s.Sizing == SizedByDistinct {
			m["distinct_values"], m["column_values"], m["values_per_array"] = s.Values, s.ColumnValues, math.Round(s.ValuesPerArray*100)/100
		}
		out = append(out, m)
	}
	return out
}
