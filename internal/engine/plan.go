// Package engine owns the online encryption migration: the plan and its id,
// and the steps that carry it out against a live database — expand (ciphertext
// columns, the pending marker and its trigger), backfill (keyset batches over
// leased chunks), catch-up, sweep and verify — plus status, and the online
// rewrites that reuse the leased chunks: reindex (a new generation of a
// column's blind index terms, switched in one transaction) and
// re-encryption (every ciphertext moved to the active data key).
//
// Every step is idempotent and safe to run from several processes at once;
// PostgreSQL is the only coordinator.
package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
)

// MarkerColumn is the per-row flag that says a row's ciphertexts must be (re)written.
const MarkerColumn = "pgphi_pending"

// FormatVersion is the version of the plan spec; it is part of the plan id.
const FormatVersion = 1

// Plan is what apply will do, derived only from the config and the catalog.
// Its ID is a hash of the spec, so the same config against the same schema
// always gives the same id, and any change gives another.
type Plan struct {
	ID     string
	Spec   Spec
	Tables []*Target
	Steps  []Step

	indexSpecs []plannedIndex // filled by AttachIndexSpecs, for Print

	// sizing is the measured sizing of columns not sized yet (SizeColumns),
	// by indexerKey; not part of the spec, so not of the plan id.
	sizing map[string]blindindex.Sizing

	// Dependencies are the objects that depend on protected columns
	// (DiscoverDependencies); not part of the spec, so not of the plan id.
	Dependencies     []catalog.Dependency
	dependenciesRead bool
}

type plannedIndex struct {
	IndexSpec
	coincidences float64
}

// AttachIndexSpecs lets Print show each blind index's bits and expected coincidences.
func (p *Plan) AttachIndexSpecs(specs []IndexSpec) {
	p.indexSpecs = nil
	for _, s := range specs {
		var c *TargetColumn
		for _, t := range p.Tables {
			for i := range t.Columns {
				if t.QualifiedName() == s.Table && t.Columns[i].Name == s.Column {
					c = &t.Columns[i]
				}
			}
		}
		tpr := 1.0
		if c != nil {
			tpr = termsPerRow(s.SubKind, 8, c.SearchOptions)
		}
		p.indexSpecs = append(p.indexSpecs, plannedIndex{s, s.ExpectedCoincidences(tpr)})
	}
}

func (c *TargetColumn) searchNames() []string {
	out := make([]string, len(c.Search))
	for i, k := range c.Search {
		out[i] = string(k)
	}
	return out
}

// Spec is the canonical, value-free description of a plan; its hash is the plan id.
type Spec struct {
	Format      int         `json:"format"`
	Environment string      `json:"environment"`
	Envelope    int         `json:"envelope_version"`
	Tables      []TableSpec `json:"tables"`
}

// TableSpec is one table of a Spec.
type TableSpec struct {
	Table   string       `json:"table"`
	Key     []KeySpec    `json:"key"`
	Columns []ColumnSpec `json:"columns"`
}

// KeySpec is one key column of a table.
type KeySpec struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// ColumnSpec is one protected column.
type ColumnSpec struct {
	Name      string              `json:"name"`
	Type      string              `json:"type"`
	Class     string              `json:"class"`
	Encrypted string              `json:"encrypted_column"`
	Search    []string            `json:"search,omitempty"`
	Index     string              `json:"index_column,omitempty"`
	Options   *blindindex.Options `json:"search_options,omitempty"`
}

// Target is one protected table with everything the steps need.
type Target struct {
	*catalog.Table
	Columns []TargetColumn

	// Uniques are the unique rules carried to digest columns (unique.go),
	// from pgphi's state; loaded on first use.
	Uniques       []UniqueColumn
	uniquesLoaded bool
}

// Cleaned reports whether cleanup has dropped the table's plaintext columns.
func (t *Target) Cleaned() bool {
	for _, c := range t.Columns {
		if !c.Cleaned {
			return false
		}
	}
	return len(t.Columns) > 0
}

// Restoring reports whether a rollback after cleanup is under way.
func (t *Target) Restoring() bool {
	for _, c := range t.Columns {
		if c.Restoring {
			return true
		}
	}
	return false
}

// TargetColumn is one protected column and where its ciphertext goes.
type TargetColumn struct {
	catalog.Column
	Class     string
	Encrypted string
	ValueType envelope.ValueType

	Cleaned   bool // cleanup dropped the plaintext; only the ciphertext (and terms) remain
	Restoring bool // a rollback after cleanup has started putting the plaintext back

	Search        []blindindex.Kind  // configured search kinds; empty: no blind index
	SearchOptions blindindex.Options // normalization and token options
	BitsOverride  map[string]int     // truncation set in the config, by sub-kind
	Index         string             // the bigint[] column holding its terms
}

// NewPlan builds the plan for resolved tables.
func NewPlan(cfg *config.Config, tables []*catalog.Table) (*Plan, error) {
	p := &Plan{Spec: Spec{Format: FormatVersion, Environment: cfg.Environment, Envelope: int(envelope.Version1)}}
	for _, t := range tables {
		tg := &Target{Table: t}
		ts := TableSpec{Table: t.QualifiedName()}
		for _, k := range t.PrimaryKey {
			ts.Key = append(ts.Key, KeySpec{Name: k.Name, Type: k.Type})
		}
		for i, c := range t.Protected {
			cc := t.Config.Columns[i]
			tc := TargetColumn{Column: c, Class: cc.Class, Encrypted: c.Name + cfg.Encryption.ColumnSuffix, ValueType: envelope.TypeForPostgres(c.BaseType)}
			cs := ColumnSpec{Name: c.Name, Type: c.Type, Class: cc.Class, Encrypted: tc.Encrypted, Search: cc.Search}
			if len(cc.Search) > 0 {
				eff := cfg.EffectiveSearch(cc)
				tc.Search, tc.SearchOptions, tc.BitsOverride = searchKinds(cc.Search), searchOptions(eff), eff.Bits
				tc.Index = c.Name + IndexSuffix
				if len(tc.Index) > 63 {
					return nil, cfg.Errorf(cc.Line, "shorten the column name", "blind index column name %q is longer than 63 bytes", tc.Index)
				}
				if existing, clash := t.Column(tc.Index); clash && existing.BaseType != "bigint[]" && c.Cleaned == nil {
					return nil, cfg.Errorf(cc.Line, "rename that column", "table %s already has a column %q of type %s, where pgphi would put the blind index", t.QualifiedName(), tc.Index, existing.Type)
				}
				if err := checkKindsForType(cfg, cc, c.BaseType); err != nil {
					return nil, err
				}
				cs.Index, cs.Options = tc.Index, &tc.SearchOptions
			}
			if c.Cleaned != nil {
				// The spec keeps the names the plan was made with, so the plan
				// id survives cleanup; the target follows what is there now.
				tc.Cleaned, tc.Restoring, tc.Encrypted = true, c.Cleaned.Restoring, c.Cleaned.Encrypted
				if c.Cleaned.Index != "" {
					tc.Index = c.Cleaned.Index
				}
			}
			tg.Columns = append(tg.Columns, tc)
			ts.Columns = append(ts.Columns, cs)
		}
		if err := checkBitsOverrides(cfg, tg); err != nil {
			return nil, err
		}
		p.Tables = append(p.Tables, tg)
		p.Spec.Tables = append(p.Spec.Tables, ts)
	}
	canon, _ := json.Marshal(p.Spec)
	sum := sha256.Sum256(canon)
	p.ID = "plan-" + hex.EncodeToString(sum[:10])
	p.Steps = buildSteps(p)
	return p, nil
}

// checkKindsForType refuses search kinds that cannot apply to the column type.
func checkKindsForType(cfg *config.Config, cc config.Column, baseType string) error {
	isDate := baseType == "date" || strings.HasPrefix(baseType, "timestamp")
	isText := baseType == "text" || strings.HasPrefix(baseType, "character") || baseType == "citext"
	for _, k := range cc.Search {
		switch {
		case k == "date" && !isDate && !isText:
			return cfg.Errorf(cc.Line, "use date search on date or timestamp columns", "search kind date on column %s of type %s", cc.Name, baseType)
		case k != "date" && !isText:
			return cfg.Errorf(cc.Line, "use "+k+" search on text columns", "search kind %s on column %s of type %s", k, cc.Name, baseType)
		}
	}
	return nil
}

// SpecJSON is the canonical spec, as stored in pgphi.plans.
func (p *Plan) SpecJSON() []byte {
	b, _ := json.Marshal(p.Spec)
	return b
}

// Print writes the plan for a human: the id, each table and column, and the steps.
func (p *Plan) Print(w io.Writer) {
	fmt.Fprintf(w, "plan %s (environment %s)\n\n", p.ID, p.Spec.Environment)
	for _, t := range p.Tables {
		var keys []string
		for _, k := range t.PrimaryKey {
			keys = append(keys, k.Name+" "+k.Type)
		}
		kind := "primary key"
		if !t.KeyIsPrimary {
			kind = "unique not-null key"
		}
		fmt.Fprintf(w, "table %s  (~%d rows, %s: %s)\n", t.QualifiedName(), t.EstimatedRows, kind, strings.Join(keys, ", "))
		for _, c := range t.Columns {
			fmt.Fprintf(w, "  %-24s %-28s %-3s -> %s bytea", c.Name, c.Type, c.Class, c.Encrypted)
			if c.HasIndex() {
				fmt.Fprintf(w, ", %s bigint[] (search: %s)", c.Index, strings.Join(c.searchNames(), ", "))
			}
			fmt.Fprintln(w)
			printDependencies(w, p.Dependencies, t.QualifiedName(), c.Name)
		}
		fmt.Fprintln(w)
	}
	if blockers := p.CheckBlockers(); len(blockers) > 0 {
		fmt.Fprintf(w, "%d objects must change first (a foreign key refuses the plan; the others fail `pgphi check` and refuse cleanup):\n", len(blockers))
		for _, d := range blockers {
			fmt.Fprintf(w, "  %s\n", d)
		}
		fmt.Fprintln(w)
	}
	if len(p.indexSpecs) > 0 {
		fmt.Fprintln(w, "blind indexes (leakage: values sharing a term are linkable; truncation puts several distinct values on every term):")
		fmt.Fprintf(w, "  %-40s %-14s %5s %12s  %s\n", "COLUMN", "TERMS", "BITS", "VALUES/TERM", "SIZED FOR")
		for _, s := range p.indexSpecs {
			how := fmt.Sprintf("%d rows (row planner)", s.Rows)
			switch {
			case s.Overridden || s.Sizing == SizedByConfig:
				how = "config override"
			case s.Sizing == SizedByDistinct:
				how = fmt.Sprintf("%d distinct of %d rows; column: %d distinct values, %.2f per term array", s.Values, s.Rows, s.ColumnValues, s.ValuesPerArray)
			}
			if s.Stored {
				how += " (fixed at first apply)"
			}
			fmt.Fprintf(w, "  %-40s %-14s %5d %12.1f  %s\n", s.Table+"."+s.Column, s.SubKind, s.Bits, s.coincidences, how)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "steps:")
	for i, s := range p.Steps {
		fmt.Fprintf(w, "  %2d. %s\n", i+1, s.Describe())
	}
}
