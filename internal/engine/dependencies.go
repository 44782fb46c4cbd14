package engine

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/pgphi/pgphi/internal/catalog"
)

// DiscoverDependencies reads, for every protected column whose plaintext is
// still there, the objects that depend on it (catalog.Dependencies), and
// keeps them on the plan for Print, the JSON plan, check and apply.
func (p *Plan) DiscoverDependencies(ctx context.Context, q catalog.Querier, encryptedSuffix string) error {
	p.Dependencies = []catalog.Dependency{}
	for _, t := range p.Tables {
		deps, err := catalog.Dependencies(ctx, q, t.Table, encryptedSuffix)
		if err != nil {
			return err
		}
		p.Dependencies = append(p.Dependencies, deps...)
	}
	p.dependenciesRead = true
	return nil
}

// dependenciesBlocking returns the dependencies that stop at the given point.
func dependenciesBlocking(deps []catalog.Dependency, blocks ...string) []catalog.Dependency {
	var out []catalog.Dependency
	for _, d := range deps {
		for _, b := range blocks {
			if d.Blocks == b {
				out = append(out, d)
			}
		}
	}
	return out
}

// ForeignKeyRefusal refuses a plan that protects a column a foreign key
// references or is made of: randomized encryption cannot be referenced.
func (p *Plan) ForeignKeyRefusal() error {
	fks := dependenciesBlocking(p.Dependencies, catalog.BlocksPlan)
	if len(fks) == 0 {
		return nil
	}
	var names []string
	for _, d := range fks {
		names = append(names, fmt.Sprintf("%s.%s: foreign key %s", d.Table, d.Column, d.Object))
	}
	return refusef("foreign keys use protected columns (%s): randomized encryption cannot be referenced; drop the constraint, or leave the column out of the configuration",
		strings.Join(names, "; "))
}

// CheckBlockers are the dependencies that make `pgphi check` fail: objects
// that read the plaintext and would stop cleanup (views, rules, policies,
// generated columns, publications), and foreign keys.
func (p *Plan) CheckBlockers() []catalog.Dependency {
	return dependenciesBlocking(p.Dependencies, catalog.BlocksPlan, catalog.BlocksCheck)
}

// cleanupRefusal re-reads the dependencies of the tables cleanup is about to
// change and refuses, before anything is dropped, while an object would
// stop the drop or silently lose its meaning (uniqueness). It returns what
// the drop will take with it, for cleanup's output.
func (r *Runner) cleanupRefusal(ctx context.Context) (dropped []catalog.Dependency, err error) {
	var deps []catalog.Dependency
	for _, t := range r.Plan.Tables {
		if t.Cleaned() {
			continue
		}
		d, err := catalog.Dependencies(ctx, r.Pool, t.Table, r.Config.Encryption.ColumnSuffix)
		if err != nil {
			return nil, err
		}
		deps = append(deps, d...)
	}
	var parts []string
	for _, t := range r.Plan.Tables {
		if t.Cleaned() {
			continue
		}
		why, err := t.uniqueNotReady(ctx, r.Pool)
		if err != nil {
			return nil, err
		}
		if why != "" {
			parts = append(parts, t.QualifiedName()+": "+why)
		}
	}
	block := dependenciesBlocking(deps, catalog.BlocksPlan, catalog.BlocksCheck, catalog.BlocksCleanup)
	if len(block) > 0 || len(parts) > 0 {
		for _, d := range block {
			parts = append(parts, fmt.Sprintf("%s.%s: %s %s (%s)", d.Table, d.Column, d.Kind, d.Object, d.Detail))
		}
		return nil, refusef("objects depend on the plaintext cleanup would drop; nothing was changed: %s", strings.Join(parts, "; "))
	}
	for _, d := range deps {
		switch d.Kind {
		case "check", "index", "statistics", "constraint", "default", "unique", "primary key", "unique index":
			dropped = append(dropped, d)
		}
	}
	return dropped, nil
}

// printDependencies writes each column's dependencies under the table in Print.
func printDependencies(w io.Writer, deps []catalog.Dependency, table, column string) {
	for _, d := range deps {
		if d.Table != table || d.Column != column {
			continue
		}
		obj := d.Kind
		if d.Object != "" {
			obj += " " + d.Object
		}
		fmt.Fprintf(w, "      %-44s %s: %s\n", obj, d.Action, d.Detail)
	}
}
