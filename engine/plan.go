// Package engine owns the online encryption migration: the plan and its id,
// and the steps that carry it out against a live database — expand (ciphertext
// columns, the pending marker and its trigger), backfill (keyset batches over
// leased chunks), catch-up, sweep and verify — plus status.
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

	"github.com/pgphi/pgphi/catalog"
	"github.com/pgphi/pgphi/config"
	"github.com/pgphi/pgphi/envelope"
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
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Class     string   `json:"class"`
	Encrypted string   `json:"encrypted_column"`
	Search    []string `json:"search,omitempty"`
}

// Target is one protected table with everything the steps need.
type Target struct {
	*catalog.Table
	Columns []TargetColumn
}

// TargetColumn is one protected column and where its ciphertext goes.
type TargetColumn struct {
	catalog.Column
	Class     string
	Encrypted string
	ValueType envelope.ValueType
}

// NewPlan builds the plan for resolved tables.
func NewPlan(cfg *config.Config, tables []*catalog.Table) *Plan {
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
			tg.Columns = append(tg.Columns, tc)
			ts.Columns = append(ts.Columns, ColumnSpec{Name: c.Name, Type: c.Type, Class: cc.Class, Encrypted: tc.Encrypted, Search: cc.Search})
		}
		p.Tables = append(p.Tables, tg)
		p.Spec.Tables = append(p.Spec.Tables, ts)
	}
	canon, _ := json.Marshal(p.Spec)
	sum := sha256.Sum256(canon)
	p.ID = "plan-" + hex.EncodeToString(sum[:10])
	p.Steps = buildSteps(p)
	return p
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
			fmt.Fprintf(w, "  %-24s %-28s %-3s -> %s bytea\n", c.Name, c.Type, c.Class, c.Encrypted)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "steps:")
	for i, s := range p.Steps {
		fmt.Fprintf(w, "  %2d. %s\n", i+1, s.Describe())
	}
}
