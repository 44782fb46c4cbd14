// Package report owns the evidence a compliance officer signs off on: the
// pre-flight checklist (`pgphi check`) with the evidence of each item, and the
// compliance report (`pgphi report`) built only from recorded facts. It says
// APPROVED FOR PRODUCTION only when every required item has evidence.
package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/engine"
)

// Check is one item of the pre-flight checklist.
type Check struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	Required bool   `json:"required"`
	Passed   bool   `json:"passed"`
	Evidence string `json:"evidence"` // what was observed; never a data value
}

// Checklist is one run of `pgphi check`.
type Checklist struct {
	PlanID    string    `json:"plan_id"`
	CheckedAt time.Time `json:"checked_at"`
	Items     []Check   `json:"items"`

	// Validation counts, kept for the report (-1: not evaluated).
	ValidationRules      int      `json:"validation_rules"`
	ValidationViolations []string `json:"validation_violations,omitempty"`
}

// OK reports whether every required item passed.
func (c *Checklist) OK() bool {
	for _, i := range c.Items {
		if i.Required && !i.Passed {
			return false
		}
	}
	return true
}

// Save records the checklist in pgphi.checks.
func Save(ctx context.Context, pool *pgxpool.Pool, c *Checklist) error {
	items, err := json.Marshal(struct {
		Items                []Check  `json:"items"`
		ValidationRules      int      `json:"validation_rules"`
		ValidationViolations []string `json:"validation_violations"`
	}{c.Items, c.ValidationRules, c.ValidationViolations})
	if err != nil {
		return err
	}
	return pool.QueryRow(ctx, "SELECT pgphi.check_record($1, $2, $3)",
		c.PlanID, c.OK(), items).Scan(&c.CheckedAt)
}

// Latest returns the last recorded checklist of a plan, or nil.
func Latest(ctx context.Context, pool *pgxpool.Pool, planID string) (*Checklist, error) {
	c := &Checklist{PlanID: planID}
	var items []byte
	err := pool.QueryRow(ctx, "SELECT checked_at, items FROM pgphi.checks WHERE plan_id = $1 AND recorded_by IS NOT NULL ORDER BY id DESC LIMIT 1", planID).Scan(&c.CheckedAt, &items)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var stored struct {
		Items                []Check  `json:"items"`
		ValidationRules      int      `json:"validation_rules"`
		ValidationViolations []string `json:"validation_violations"`
	}
	if err := json.Unmarshal(items, &stored); err != nil {
		return nil, err
	}
	c.Items, c.ValidationRules, c.ValidationViolations = stored.Items, stored.ValidationRules, stored.ValidationViolations
	return c, nil
}

// ServerLogSettings checks the settings that would copy PHI into the server's
// own logs: statements with literal values, slow statements with their
// parameters, and statements that caused errors.
func ServerLogSettings(ctx context.Context, pool *pgxpool.Pool) Check {
	c := Check{ID: "server-logs", Title: "server settings do not write PHI into server logs", Required: true}
	names := []string{"log_statement", "log_min_duration_statement", "log_min_error_statement", "log_parameter_max_length", "log_parameter_max_length_on_error"}
	vals := map[string]string{}
	for _, n := range names {
		var v string
		if err := pool.QueryRow(ctx, "SELECT current_setting($1, true)", n).Scan(&v); err != nil {
			c.Evidence = "cannot read " + n + ": " + err.Error()
			return c
		}
		vals[n] = v
	}
	var problems []string
	if v := vals["log_statement"]; v == "mod" || v == "all" {
		problems = append(problems, "log_statement="+v+" logs every write with its values (use none or ddl)")
	}
	if v := vals["log_min_duration_statement"]; v != "-1" && vals["log_parameter_max_length"] != "0" {
		problems = append(problems, "log_min_duration_statement="+v+" with log_parameter_max_length="+vals["log_parameter_max_length"]+" logs slow statements with their parameters (set log_parameter_max_length = 0, or -1 for the duration)")
	}
	if v := vals["log_min_error_statement"]; v != "panic" && vals["log_parameter_max_length_on_error"] != "0" {
		problems = append(problems, "log_min_error_statement="+v+" with log_parameter_max_length_on_error="+vals["log_parameter_max_length_on_error"]+" logs failing statements with parameters")
	}
	var ev []string
	for _, n := range names {
		ev = append(ev, n+"="+vals[n])
	}
	c.Passed = len(problems) == 0
	c.Evidence = strings.Join(ev, ", ")
	if !c.Passed {
		c.Evidence += "; " + strings.Join(problems, "; ")
	}
	return c
}

// Pgaudit reports whether the pgaudit extension records statement-level
// access to the database (recommended alongside pgphi's own trail).
func Pgaudit(ctx context.Context, pool *pgxpool.Pool) Check {
	c := Check{ID: "pgaudit", Title: "pgaudit records database access", Required: false}
	var installed bool
	var preload string
	_ = pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgaudit'), current_setting('shared_preload_libraries', true)").Scan(&installed, &preload)
	c.Passed = installed && strings.Contains(preload, "pgaudit")
	c.Evidence = fmt.Sprintf("extension installed: %v, shared_preload_libraries=%q", installed, preload)
	if !c.Passed {
		c.Evidence += " (recommended: install pgaudit for access logging by the server itself)"
	}
	return c
}

// Disk estimates the space apply needs (ciphertext and index columns: about
// the size of the protected tables again) against the free space, when the
// server's data directory is on this machine and readable.
func Disk(ctx context.Context, pool *pgxpool.Pool, tables []string, free func(dir string) (uint64, error)) Check {
	c := Check{ID: "disk", Title: "free disk space for the migration", Required: true}
	var size int64
	if err := pool.QueryRow(ctx, "SELECT COALESCE(sum(pg_total_relation_size(t::regclass)), 0)::bigint FROM unnest($1::text[]) t", tables).Scan(&size); err != nil {
		c.Evidence = "cannot size the tables: " + err.Error()
		return c
	}
	need := uint64(float64(size) * 1.5)
	var dir string
	if err := pool.QueryRow(ctx, "SELECT current_setting('data_directory', true)").Scan(&dir); err != nil || dir == "" {
		c.Passed = true
		c.Evidence = fmt.Sprintf("needs about %s; the data directory is not visible to this role: check free space on the server", human(need))
		return c
	}
	avail, err := free(dir)
	if err != nil {
		c.Passed = true
		c.Evidence = fmt.Sprintf("needs about %s; free space of %s not readable from here (%v): check it on the server", human(need), dir, err)
		return c
	}
	c.Passed = avail > need
	c.Evidence = fmt.Sprintf("needs about %s (1.5x the protected tables' %s), %s free in the data directory", human(need), human(uint64(size)), human(avail))
	return c
}

func human(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// Triggers is the check that pgphi's triggers, mark functions and envelope
// checks are in place on every expanded table (engine.CheckTriggers): a
// trigger the table's owner disabled or dropped switches require_encryption
// off and lets writes go unmarked. Call it as Triggers(engine.CheckTriggers(...)).
func Triggers(problems []engine.TriggerProblem, err error) Check {
	c := Check{ID: "triggers", Title: "pgphi's triggers in place and enabled", Required: true}
	switch {
	case err != nil:
		c.Evidence = "cannot inspect the triggers: " + err.Error()
	case len(problems) == 0:
		c.Passed = true
		c.Evidence = "every expanded table has its pgphi triggers enabled, its mark function (SECURITY INVOKER, not executable by PUBLIC, unchanged) and its envelope checks"
	default:
		parts := make([]string, len(problems))
		for i, p := range problems {
			parts[i] = p.String()
		}
		c.Evidence = fmt.Sprintf("%d problems: %s; `pgphi apply` puts them back", len(problems), strings.Join(parts, "; "))
	}
	return c
}

// OwnerCode is the check item of the application owner's code that pgphi's
// statements would fire with rights other than the owner's
// (engine.OwnerCodeReport). It is a recommendation outside production and
// a requirement in production, where a superuser login is refused for those
// statements anyway.
func OwnerCode(findings []string, err error, production bool) Check {
	c := Check{ID: "owner-code", Title: "application owner code runs with the owner's rights only", Required: production}
	switch {
	case err != nil:
		c.Evidence = "cannot inspect the tables' owner code: " + err.Error()
	case len(findings) == 0:
		c.Passed = true
		c.Evidence = "every protected table's triggers, index expressions, constraints, defaults and policies run as its owner when pgphi writes (SET LOCAL ROLE), or there are none"
	default:
		c.Evidence = fmt.Sprintf("%d tables: %s", len(findings), strings.Join(findings, "; "))
	}
	return c
}

// Dependencies is the check item of the objects that depend on protected
// columns (engine.Plan.CheckBlockers): a view, materialized view, rule, RLS
// policy, generated column or publication that reads a protected column's
// plaintext would stop cleanup, and a foreign key cannot reference
// ciphertext. Each is named with what to do; uniqueness, which cleanup
// refuses to drop, is named in the evidence.
func Dependencies(blockers, all []catalog.Dependency) Check {
	c := Check{ID: "dependencies", Title: "no view, rule, policy, generated column, publication or foreign key uses a protected column's plaintext", Required: true}
	var unique []string
	for _, d := range all {
		if d.Blocks == catalog.BlocksCleanup {
			unique = append(unique, d.Table+"."+d.Column+": "+d.Kind+" "+d.Object)
		}
	}
	if len(blockers) == 0 {
		c.Passed = true
		c.Evidence = fmt.Sprintf("%d dependent objects, none reads the plaintext after cleanup (`pgphi plan` lists each with its action)", len(all))
	} else {
		parts := make([]string, len(blockers))
		for i, d := range blockers {
			parts[i] = d.String()
		}
		c.Evidence = fmt.Sprintf("%d objects: %s", len(blockers), strings.Join(parts, "; "))
	}
	if len(unique) > 0 {
		c.Evidence += fmt.Sprintf("; cleanup will refuse while uniqueness is enforced on the plaintext (%s)", strings.Join(unique, "; "))
	}
	return c
}
