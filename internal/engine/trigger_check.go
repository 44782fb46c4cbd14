package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/state"
)

// TriggerProblem is one way a protected table's pgphi objects are not what
// expand made them: a trigger missing, disabled or calling another function,
// a mark function replaced or made SECURITY DEFINER, an envelope CHECK
// dropped or changed. While one exists, writes to the table may go unmarked
// or plaintext may be written while require_encryption is on. It names
// objects, never values.
type TriggerProblem struct {
	Table   string `json:"table"`
	Object  string `json:"object"`
	Problem string `json:"problem"`
}

func (p TriggerProblem) String() string {
	return fmt.Sprintf("%s: %s: %s", p.Table, p.Object, p.Problem)
}

// ErrTriggers is returned where a command refuses to go on over TriggerProblems.
var ErrTriggers = errors.New("pgphi's triggers are not in place")

// definitionsMarker begins the mark function's comment, which records a hash
// of the definitions of the table's triggers and envelope checks as expand
// made them. Only the function's owner (pgphi's schema owner) can change the
// comment; the table's owner, who can drop and recreate triggers and
// constraints on the table, cannot.
var definitionsMarker = fmt.Sprintf("pgphi mark function version %d; definitions sha256 ", markVersion)

// definitionsHashQuery hashes the definitions of a table's pgphi triggers
// and envelope checks, as the server prints them.
const definitionsHashQuery = `
	SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(COALESCE(pg_catalog.string_agg(s.n OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) s.d, E'\n' ORDER BY s.n), ''), 'UTF8')), 'hex')
	FROM (SELECT tgname::text AS n, pg_catalog.pg_get_triggerdef(oid) AS d FROM pg_catalog.pg_trigger
	       WHERE tgrelid OPERATOR(pg_catalog.=) $1::regclass AND tgname OPERATOR(pg_catalog.=) ANY ($2::text[])
	      UNION ALL
	      SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
	       WHERE conrelid OPERATOR(pg_catalog.=) $1::regclass AND conname OPERATOR(pg_catalog.=) ANY ($3::text[])) s`

func (t *Target) definitionsHash(ctx context.Context, q catalog.Querier) (string, error) {
	var h string
	err := q.QueryRow(ctx, definitionsHashQuery, t.Ident(), triggerNames, t.envelopeChecks()).Scan(&h)
	return h, err
}

// CheckTriggers inspects every table of the plan that apply has expanded and
// cleanup has not cleaned, and returns what is wrong with pgphi's objects on
// it: each trigger missing, disabled (ALTER TABLE ... DISABLE TRIGGER) or
// firing only in replica mode, or calling a function other than pgphi's; a
// mark function missing, SECURITY DEFINER, not owned by pgphi's schema
// owner, executable by PUBLIC, without its pinned search_path, or with
// another body; an envelope CHECK missing; the CHECK that stands for a
// column's NOT NULL missing; definitions changed since expand;
// a table that gained inheritance parents or children. status, verify and
// check fail while any is found; apply puts the objects back.
func CheckTriggers(ctx context.Context, q catalog.Querier, p *Plan) ([]TriggerProblem, error) {
	hasState, err := state.Exists(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []TriggerProblem
	expanded := false
	for _, t := range p.Tables {
		if t.Cleaned() || t.Restoring() {
			continue
		}
		var recorded, marker bool
		if hasState {
			if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pgphi.protected_columns WHERE table_name OPERATOR(pg_catalog.=) $1 AND phase OPERATOR(pg_catalog.=) 'expanded')",
				t.QualifiedName()).Scan(&recorded); err != nil {
				return nil, fmt.Errorf("checking triggers of %s: %w", t.QualifiedName(), err)
			}
		}
		if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1::regclass AND attname OPERATOR(pg_catalog.=) $2 AND NOT attisdropped)",
			t.Ident(), MarkerColumn).Scan(&marker); err != nil {
			return nil, fmt.Errorf("checking triggers of %s: %w", t.QualifiedName(), err)
		}
		if !recorded && !marker {
			continue // not expanded yet: nothing to protect
		}
		expanded = true
		probs, err := t.triggerProblems(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, probs...)
	}
	if expanded {
		// The mark functions run as the writing role and read
		// require_encryption through pgphi.flag: every role must be able
		// to reach it, or writes to protected tables fail.
		var usage, execute bool
		if err := q.QueryRow(ctx, `SELECT pg_catalog.has_schema_privilege('public', 'pgphi', 'USAGE'),
			pg_catalog.to_regprocedure('pgphi.flag(text)') IS NOT NULL AND pg_catalog.has_function_privilege('public', 'pgphi.flag(text)', 'EXECUTE')`).Scan(&usage, &execute); err != nil {
			return nil, fmt.Errorf("checking pgphi.flag: %w", err)
		}
		if !usage || !execute {
			out = append(out, TriggerProblem{Table: "schema pgphi", Object: "function pgphi.flag(text)",
				Problem: "not reachable by every role (USAGE on schema pgphi and EXECUTE on pgphi.flag for PUBLIC): the mark functions cannot read require_encryption"})
		}
	}
	return out, nil
}

// triggerProblems checks one table's pgphi objects against what this pgphi's
// expand makes.
func (t *Target) triggerProblems(ctx context.Context, q catalog.Querier) ([]TriggerProblem, error) {
	var out []TriggerProblem
	add := func(object, format string, args ...any) {
		out = append(out, TriggerProblem{Table: t.QualifiedName(), Object: object, Problem: fmt.Sprintf(format, args...)})
	}
	wrap := func(err error) error { return fmt.Errorf("checking triggers of %s: %w", t.QualifiedName(), err) }
	if err := t.loadUniques(ctx, q); err != nil {
		return nil, err
	}

	if reason, err := tableShapeProblem(ctx, q, t.Table); err != nil {
		return nil, wrap(err)
	} else if reason != "" {
		add("table", "%s: pgphi's triggers and ciphertexts do not cover it", reason)
	}

	// The mark function.
	fn := "function " + t.markFunctionIdent() + "()"
	var (
		markOID                 uint32
		definer, ownedBySchema  bool
		src, owner, schemaOwner string
		config                  []string
		public                  bool
		comment                 *string
	)
	err := q.QueryRow(ctx, `
		SELECT p.oid, p.prosecdef, p.prosrc, p.proowner::regrole::text, n.nspowner::regrole::text, p.proowner OPERATOR(pg_catalog.=) n.nspowner,
		       COALESCE(p.proconfig, '{}'::text[]),
		       p.proacl IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) a WHERE a.grantee OPERATOR(pg_catalog.=) 0 AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'),
		       pg_catalog.obj_description(p.oid, 'pg_proc')
		FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
		WHERE n.nspname OPERATOR(pg_catalog.=) 'pgphi' AND p.proname OPERATOR(pg_catalog.=) $1 AND p.pronargs OPERATOR(pg_catalog.=) 0`,
		t.markFunction()).Scan(&markOID, &definer, &src, &owner, &schemaOwner, &ownedBySchema, &config, &public, &comment)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		add(fn, "missing")
	case err != nil:
		return nil, wrap(err)
	default:
		if definer {
			add(fn, "is SECURITY DEFINER: code of the row values' types would run with its owner's rights")
		}
		if !ownedBySchema {
			add(fn, "is owned by %s, not by pgphi's schema owner %s", owner, schemaOwner)
		}
		if public {
			add(fn, "is executable by PUBLIC: any role could attach it to a table of its own")
		}
		if !slices.Contains(config, "search_path=pg_catalog, pg_temp") {
			add(fn, "does not pin search_path = pg_catalog, pg_temp")
		}
		if src != t.markFunctionBody() {
			add(fn, "body differs from this pgphi's (changed, or made by an older pgphi: an apply replaces it)")
		}
	}

	// The triggers.
	var countOID uint32
	if err := q.QueryRow(ctx, `SELECT COALESCE((SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
		WHERE n.nspname OPERATOR(pg_catalog.=) 'pgphi' AND p.proname OPERATOR(pg_catalog.=) 'count_write' AND p.pronargs OPERATOR(pg_catalog.=) 0), 0)`).Scan(&countOID); err != nil {
		return nil, wrap(err)
	}
	rows, err := q.Query(ctx, `SELECT tgname::text, tgenabled::text, tgfoid, tgfoid::regproc::text FROM pg_catalog.pg_trigger
		WHERE tgrelid OPERATOR(pg_catalog.=) $1::regclass AND tgname OPERATOR(pg_catalog.=) ANY ($2::text[])`, t.Ident(), triggerNames)
	if err != nil {
		return nil, wrap(err)
	}
	type trig struct {
		enabled, fnName string
		fn              uint32
	}
	found := map[string]trig{}
	for rows.Next() {
		var name string
		var tg trig
		if err := rows.Scan(&name, &tg.enabled, &tg.fn, &tg.fnName); err != nil {
			rows.Close()
			return nil, wrap(err)
		}
		found[name] = tg
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrap(err)
	}
	for _, name := range triggerNames {
		obj := "trigger " + name
		tg, ok := found[name]
		if !ok {
			add(obj, "missing")
			continue
		}
		switch tg.enabled {
		case "O", "A":
		case "D":
			add(obj, "disabled (ALTER TABLE ... DISABLE TRIGGER): writes go unmarked and require_encryption is not enforced")
		case "R":
			add(obj, "fires only in replica mode (ENABLE REPLICA TRIGGER): it does not fire for ordinary writes")
		default:
			add(obj, "in an unknown state %q", tg.enabled)
		}
		want := markOID
		if name == countTriggerName {
			want = countOID
		}
		if want == 0 || tg.fn != want {
			add(obj, "calls %s, not pgphi's function", tg.fnName)
		}
	}

	// The envelope checks.
	var present []string
	rows, err = q.Query(ctx, `SELECT conname::text FROM pg_catalog.pg_constraint
		WHERE conrelid OPERATOR(pg_catalog.=) $1::regclass AND contype OPERATOR(pg_catalog.=) 'c' AND conname OPERATOR(pg_catalog.=) ANY ($2::text[])`, t.Ident(), t.envelopeChecks())
	if err != nil {
		return nil, wrap(err)
	}
	if present, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, wrap(err)
	}
	for _, c := range t.Columns {
		if !slices.Contains(present, c.envelopeCheck()) {
			add("constraint "+c.envelopeCheck(), "missing: a malformed ciphertext written to %s would be accepted", c.Encrypted)
		}
	}
	for _, u := range t.Uniques {
		var ok bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid OPERATOR(pg_catalog.=) $1::regclass AND conname OPERATOR(pg_catalog.=) $2)`,
			t.Ident(), t.uniquePresentCheck(u.Column)).Scan(&ok); err != nil {
			return nil, wrap(err)
		}
		if !ok {
			add("constraint "+t.uniquePresentCheck(u.Column), "missing: a ciphertext written without its digest %s would slip a duplicate past %s", u.Column, u.Object)
		}
	}

	// The CHECKs that stand for the NOT NULL of columns that had one (none
	// to check without state, or with state from before original_not_null).
	var haveState bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('pgphi.protected_columns')
		AND attname OPERATOR(pg_catalog.=) 'original_not_null' AND NOT attisdropped)`).Scan(&haveState); err != nil {
		return nil, wrap(err)
	}
	if haveState {
		missing, err := t.missingNotNullChecks(ctx, q)
		if err != nil {
			return nil, wrap(err)
		}
		for _, c := range t.Columns {
			if slices.Contains(missing, c.Name) {
				add("constraint "+c.notNullCheck(), "missing: %s was NOT NULL, and a row with neither %s nor %s would be accepted", c.Name, c.Name, c.Encrypted)
			}
		}
	}

	// The definitions as a whole, against what expand recorded.
	if markOID != 0 {
		h, err := t.definitionsHash(ctx, q)
		if err != nil {
			return nil, wrap(err)
		}
		if comment == nil || !strings.HasPrefix(*comment, definitionsMarker) || strings.TrimPrefix(*comment, definitionsMarker) != h {
			add(fn, "the triggers' or envelope checks' definitions differ from those expand recorded (changed, or made by an older pgphi: an apply replaces them)")
		}
	}
	return out, nil
}

// TriggersError formats problems for a command that fails over them.
func TriggersError(problems []TriggerProblem) error {
	parts := make([]string, len(problems))
	for i, p := range problems {
		parts[i] = p.String()
	}
	return withNextStep(fmt.Errorf("%w: %s; an apply puts them back: find out who changed them", ErrTriggers, strings.Join(parts, "; ")), OpApply)
}

// missingNotNullChecks lists the columns of t recorded NOT NULL before expand
// whose pgphi CHECK is gone.
func (t *Target) missingNotNullChecks(ctx context.Context, q catalog.Querier) ([]string, error) {
	var cols, names []string
	for _, c := range t.Columns {
		cols, names = append(cols, c.Name), append(names, c.notNullCheck())
	}
	rows, err := q.Query(ctx, `SELECT p.column_name FROM pgphi.protected_columns p
		WHERE p.table_name OPERATOR(pg_catalog.=) $1 AND p.phase OPERATOR(pg_catalog.=) 'expanded' AND p.original_not_null
		  AND p.column_name OPERATOR(pg_catalog.=) ANY ($2::text[])`, t.QualifiedName(), cols)
	if err != nil {
		return nil, err
	}
	notNull, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(notNull) == 0 {
		return nil, err
	}
	rows, err = q.Query(ctx, `SELECT conname::text FROM pg_catalog.pg_constraint
		WHERE conrelid OPERATOR(pg_catalog.=) $1::regclass AND contype OPERATOR(pg_catalog.=) 'c' AND conname OPERATOR(pg_catalog.=) ANY ($2::text[])`, t.Ident(), names)
	if err != nil {
		return nil, err
	}
	present, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, c := range t.Columns {
		if slices.Contains(notNull, c.Name) && !slices.Contains(present, c.notNullCheck()) {
			missing = append(missing, c.Name)
		}
	}
	return missing, nil
}
