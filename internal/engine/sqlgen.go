package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/envelope"
)

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// shortHash names pgphi's objects for a table deterministically and within
// PostgreSQL's 63-byte identifier limit.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

func objectName(prefix, table string) string {
	base := unsafeChars.ReplaceAllString(strings.ToLower(table), "_")
	if len(base) > 36 {
		base = base[:36]
	}
	return prefix + base + "_" + shortHash(table)
}

// names of the objects pgphi adds for a table.
func (t *Target) markFunction() string { return objectName("mark_", t.QualifiedName()) }
func (t *Target) markFunctionIdent() string {
	return pgx.Identifier{"pgphi", t.markFunction()}.Sanitize()
}

// The trigger is named to sort last: PostgreSQL fires BEFORE triggers in name
// order, and ours must see the plaintext after any application trigger has
// changed it.

func (t *Target) pendingIndex() string { return objectName("pgphi_pending_", t.QualifiedName()) }

func (t *Target) keyNames() []string {
	out := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		out[i] = k.Name
	}
	return out
}

// keyList is the key columns as an SQL list, optionally qualified.
func (t *Target) keyList(qual string) string {
	parts := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		parts[i] = qual + ident(k.Name)
	}
	return strings.Join(parts, ", ")
}

// keyCompare is "(k1, k2) OP ($n::t1, $n+1::t2)". Row comparison keeps the
// keyset predicate index-backed for composite keys.
func (t *Target) keyCompare(op string, firstArg int) string {
	params := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		params[i] = fmt.Sprintf("$%d::%s", firstArg+i, k.Type)
	}
	if len(params) == 1 {
		return fmt.Sprintf("%s %s %s", ident(t.PrimaryKey[0].Name), op, params[0])
	}
	return fmt.Sprintf("(%s) %s (%s)", t.keyList(""), op, strings.Join(params, ", "))
}

// KeyTexts is the select list of the key columns' canonical text, each under
// a name of its own: an ORDER BY on a key name would otherwise bind to the
// text output column and sort 10 before 9.
func (t *Target) KeyTexts() []string {
	out := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		out[i] = fmt.Sprintf("%s::text AS pgphi_key_%d", ident(k.Name), i)
	}
	return out
}

// selectColumns is "ctid, key::text..., col::text..." — the canonical text of
// every key and protected value, under the session settings of canonicalParams.
func (t *Target) selectColumns() string {
	var b strings.Builder
	b.WriteString("ctid")
	for _, k := range t.KeyTexts() {
		b.WriteString(", " + k)
	}
	for i, c := range t.Columns {
		fmt.Fprintf(&b, ", %s::text AS pgphi_value_%d", ident(c.Name), i)
	}
	return b.String()
}

// catchUpQuery reads marked rows through the partial index, skipping rows
// another worker or the application holds.
func (t *Target) catchUpQuery() string {
	return fmt.Sprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
		t.selectColumns(), t.Ident(), ident(MarkerColumn), t.keyList(""))
}

// addedColumns are the columns expand adds to the table.
func (t *Target) addedColumns() []string {
	if t.Cleaned() {
		var out []string
		for _, c := range t.Columns {
			out = append(out, c.Encrypted)
			if c.HasIndex() {
				out = append(out, c.Index)
			}
		}
		for _, u := range t.Uniques {
			out = append(out, u.Column)
		}
		return out
	}
	out := []string{MarkerColumn}
	for _, c := range t.Columns {
		out = append(out, c.Encrypted)
		if c.HasIndex() {
			out = append(out, c.Index)
		}
	}
	for _, u := range t.Uniques {
		out = append(out, u.Column)
	}
	return out
}

// markVersion is the version of the mark function and of the objects expand
// puts around it (triggers, envelope checks). The function's body names it, so
// an installation made by an older pgphi is recognised and expanded again.
const markVersion = 3

// markFunctionSQL is the trigger function that keeps ciphertexts honest while
// the application writes plaintext: a changed plaintext (or key) clears the
// stale ciphertext unless the writer supplied a new one, and marks the row.
// Values are compared as text in the "C" collation (byte for byte), so that
// 1.0 -> 1.00 and Smith -> SMITH under a case-insensitive collation count as
// changes, and json (which has no equality operator) works.
//
// The function is SECURITY INVOKER: it runs as the role whose write fired it,
// so the code a row value's type brings (a cast to text, an output function)
// runs with that role's own rights and gains nothing. The only object of
// pgphi's schema it uses is pgphi.flag, which every role may execute (and
// which is SECURITY DEFINER itself, so the writer needs no right on
// pgphi.flags); schema pgphi is usable by PUBLIC for that.
//
// It returns the CREATE and the REVOKE EXECUTE ... FROM PUBLIC that must run
// with it (CREATE FUNCTION grants EXECUTE to PUBLIC): no other role may
// attach the function to a table of its own.
func (t *Target) markFunctionSQL() []string {
	return []string{t.createMarkFunctionSQL(), fmt.Sprintf("REVOKE EXECUTE ON FUNCTION %s() FROM PUBLIC", t.markFunctionIdent())}
}

func (t *Target) createMarkFunctionSQL() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $pgphi$\n", t.markFunctionIdent())
	fmt.Fprintf(&b, "-- pgphi mark function, version %d\nBEGIN\n", markVersion)

	// After cutover (flag require_encryption) applications write ciphertext
	// only; a plaintext value written to a protected column is refused.
	fmt.Fprintf(&b, "  IF ((TG_OP = 'INSERT' AND (%s)) OR (TG_OP = 'UPDATE' AND (%s))) AND pgphi.flag('require_encryption') THEN\n",
		t.plaintextWritten(), t.plaintextChanged())
	fmt.Fprintf(&b, "    RAISE EXCEPTION 'pgphi: plaintext write to a protected column of %s refused: require_encryption is on' USING ERRCODE = 'insufficient_privilege', HINT = 'write the ciphertext column instead (pgphi flags)';\n  END IF;\n",
		strings.ReplaceAll(t.QualifiedName(), "'", "''"))
	// An insert needs encryption when it brings a plaintext value; a row an
	// application wrote with ciphertext only (after cutover) does not.
	fmt.Fprintf(&b, "  IF TG_OP = 'INSERT' THEN\n    NEW.%s := %s;\n    RETURN NEW;\n  END IF;\n", ident(MarkerColumn), t.plaintextWritten())
	var keyDiff []string
	for _, k := range t.PrimaryKey {
		keyDiff = append(keyDiff, keyChanged(k.Name))
	}
	// A key change: ciphertexts are bound to the key, so one the writer did
	// not replace is stale and is cleared, to be encrypted again from the
	// plaintext. Where the value exists only as a ciphertext (the
	// application wrote it encrypted after cutover), clearing it would lose
	// the value: the change is refused unless the writer supplies the
	// ciphertext for the new key. Blind index terms do not depend on the key;
	// the plaintext changes below still clear stale ones.
	fmt.Fprintf(&b, "  IF %s THEN\n", strings.Join(keyDiff, " OR "))
	for _, c := range t.Columns {
		fmt.Fprintf(&b, "    IF NEW.%[1]s IS NOT DISTINCT FROM OLD.%[1]s AND OLD.%[1]s IS NOT NULL THEN\n", ident(c.Encrypted))
		fmt.Fprintf(&b, "      IF OLD.%[1]s IS NULL AND NEW.%[1]s IS NULL THEN\n", ident(c.Name))
		fmt.Fprintf(&b, "        RAISE EXCEPTION 'pgphi: the key of a row of %s changed, but its %s exists only as a ciphertext bound to the old key' USING ERRCODE = 'integrity_constraint_violation', HINT = 'write %s for the new key in the same statement';\n",
			strings.ReplaceAll(t.QualifiedName(), "'", "''"), strings.ReplaceAll(c.Name, "'", "''"), strings.ReplaceAll(c.Encrypted, "'", "''"))
		fmt.Fprintf(&b, "      END IF;\n      NEW.%s := NULL;\n    END IF;\n", ident(c.Encrypted))
	}
	fmt.Fprintf(&b, "    NEW.%s := %s;\n  END IF;\n", ident(MarkerColumn), t.plaintextWritten())
	for _, c := range t.Columns {
		fmt.Fprintf(&b, "  IF %s THEN\n", valueChanged(c.Name))
		// The writer's ciphertext and terms stand when it replaced the
		// ciphertext: its terms may equal the old ones (the same value
		// written again, encrypted after cutover), and clearing them would
		// leave a value without terms. Terms it left stale beside a new
		// ciphertext are re-computed by the catch-up (a new plaintext) or
		// reported by verify. A ciphertext it did not replace is stale, and
		// so are its terms.
		if c.HasIndex() {
			fmt.Fprintf(&b, "    IF NEW.%[1]s IS NOT DISTINCT FROM OLD.%[1]s THEN NEW.%[1]s := NULL; NEW.%[2]s := NULL; END IF;\n", ident(c.Encrypted), ident(c.Index))
		} else {
			fmt.Fprintf(&b, "    IF NEW.%[1]s IS NOT DISTINCT FROM OLD.%[1]s THEN NEW.%[1]s := NULL; END IF;\n", ident(c.Encrypted))
		}
		// A digest over the changed column: stale when a new plaintext
		// comes (the row is marked and the catch-up computes it) unless
		// the writer supplied a new one; none when the value was cleared.
		// A ciphertext-only write brings its own (CHECK pgphi_uniq_...).
		for _, u := range t.Uniques {
			if slices.Contains(u.Members, c.Name) {
				fmt.Fprintf(&b, "    IF NEW.%[1]s IS NOT NULL THEN\n      IF NEW.%[2]s IS NOT DISTINCT FROM OLD.%[2]s THEN NEW.%[2]s := NULL; END IF;\n    ELSIF NEW.%[3]s IS NULL THEN\n      NEW.%[2]s := NULL;\n    END IF;\n",
					ident(c.Name), ident(u.Column), ident(c.Encrypted))
			}
		}
		// Only a new plaintext needs encrypting: a value the application
		// cleared, or replaced by a ciphertext of its own after cutover
		// (plaintext NULL), leaves nothing for the catch-up to do, and a
		// marked row would count as pending in every verification.
		fmt.Fprintf(&b, "    IF NEW.%s IS NOT NULL THEN NEW.%s := true; END IF;\n  END IF;\n", ident(c.Name), ident(MarkerColumn))
	}
	b.WriteString("  RETURN NEW;\nEND\n$pgphi$")
	return b.String()
}

// markFunctionBody is the function's source as pg_proc.prosrc holds it.
func (t *Target) markFunctionBody() string {
	full := t.createMarkFunctionSQL()
	return full[strings.Index(full, "$pgphi$")+len("$pgphi$") : strings.LastIndex(full, "$pgphi$")]
}

// plaintextWritten is true when a new row version holds a plaintext value.
func (t *Target) plaintextWritten() string {
	var parts []string
	for _, c := range t.Columns {
		parts = append(parts, fmt.Sprintf("NEW.%s IS NOT NULL", ident(c.Name)))
	}
	return strings.Join(parts, " OR ")
}

// plaintextChanged is true when an update writes a plaintext value other
// than the one the row had (byte for byte).
func (t *Target) plaintextChanged() string {
	var parts []string
	for _, c := range t.Columns {
		parts = append(parts, fmt.Sprintf("(NEW.%s IS NOT NULL AND %s)", ident(c.Name), valueChanged(c.Name)))
	}
	return strings.Join(parts, " OR ")
}

// The row trigger runs the mark function on an insert, and on an update only
// when a key or a plaintext value changed (the WHEN clause is evaluated
// without entering PL/pgSQL): pgphi's own writes of ciphertexts, and the
// application's updates of other columns, cost no function call per row.
// A statement trigger advances pgphi.write_seq once per writing statement.
const (
	triggerName       = "zz_pgphi_mark"
	insertTriggerName = "zz_pgphi_mark_insert"
	countTriggerName  = "zz_pgphi_count"
)

// triggerNames are every trigger pgphi puts on a protected table.
var triggerNames = []string{triggerName, insertTriggerName, countTriggerName}

// changedCondition is true when an update changes a key or a plaintext value:
// exactly when the mark function has something to do.
func (t *Target) changedCondition() string {
	var parts []string
	for _, k := range t.PrimaryKey {
		parts = append(parts, keyChanged(k.Name))
	}
	for _, c := range t.Columns {
		parts = append(parts, valueChanged(c.Name))
	}
	return strings.Join(parts, " OR ")
}

// keyChanged and valueChanged are the comparisons of the mark function that
// its trigger's WHEN clause repeats; one definition keeps the two the same.
// Keys and values are compared as text in the "C" collation: byte for byte,
// whatever the column's collation (a nondeterministic one makes abc equal to
// ABC), so 1.0 -> 1.00 and json (which has no equality operator) count as
// changes too.
func keyChanged(col string) string {
	return fmt.Sprintf("NEW.%[1]s::text COLLATE \"C\" IS DISTINCT FROM OLD.%[1]s::text COLLATE \"C\"", ident(col))
}

func valueChanged(col string) string {
	return fmt.Sprintf("NEW.%[1]s::text COLLATE \"C\" IS DISTINCT FROM OLD.%[1]s::text COLLATE \"C\"", ident(col))
}

func (t *Target) createTriggerSQL() []string {
	return []string{
		fmt.Sprintf("CREATE OR REPLACE TRIGGER %s BEFORE UPDATE ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION %s()",
			ident(triggerName), t.Ident(), t.changedCondition(), t.markFunctionIdent()),
		fmt.Sprintf("CREATE OR REPLACE TRIGGER %s BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s()",
			ident(insertTriggerName), t.Ident(), t.markFunctionIdent()),
		fmt.Sprintf("CREATE OR REPLACE TRIGGER %s AFTER INSERT OR UPDATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgphi.count_write()",
			ident(countTriggerName), t.Ident()),
	}
}

// dropTriggersSQL removes the triggers of createTriggerSQL.
func (t *Target) dropTriggersSQL() []string {
	var out []string
	for _, n := range triggerNames {
		out = append(out, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", ident(n), t.Ident()))
	}
	return out
}

// envelopeCheck names the CHECK constraint on a column's ciphertext. It is
// derived from the plaintext column's name, which the ciphertext takes over
// when cleanup renames it: the constraint keeps its name and goes on
// checking.
func (c *TargetColumn) envelopeCheck() string { return objectName("pgphi_envelope_", c.Name) }

// envelopeChecks are the names of every envelope CHECK of the table.
func (t *Target) envelopeChecks() []string {
	out := make([]string, len(t.Columns))
	for i := range t.Columns {
		out[i] = t.Columns[i].envelopeCheck()
	}
	return out
}

// envelopeCheckSQL replaces the CHECK that every ciphertext written to the
// column has a well-formed envelope header (docs/FORMAT.md): version 0x01, a
// key id other than 0, and at least the header, nonce, tag and one byte of
// value. A write that changes only a ciphertext column does not fire the mark
// trigger; this check refuses one that is not a pgphi ciphertext at all, and
// cleanup verifies again every row written after the last verification.
// NOT VALID: added without reading the table, enforced for every new write.
// Built-in functions only, schema-qualified: the check runs as the writer.
func (t *Target) envelopeCheckSQL(c *TargetColumn) []string {
	col := ident(c.Encrypted)
	// substr and octet_length read only the first bytes and the size of a
	// large (TOASTed) ciphertext, not all of it. E'' literals read the same
	// whatever standard_conforming_strings says.
	return []string{
		fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", t.Ident(), ident(c.envelopeCheck())),
		fmt.Sprintf(`ALTER TABLE %[1]s ADD CONSTRAINT %[2]s CHECK (%[3]s IS NULL OR (pg_catalog.octet_length(%[3]s) >= %[4]d`+
			` AND pg_catalog.substr(%[3]s, 1, 1) = E'\\x%02[5]x'::pg_catalog.bytea`+
			` AND pg_catalog.substr(%[3]s, 2, 4) <> E'\\x00000000'::pg_catalog.bytea)) NOT VALID`,
			t.Ident(), ident(c.envelopeCheck()), col, envelope.MinCiphertextSize, envelope.Version1),
	}
}

// incompleteRowsPredicate is true for a row with a plaintext but no
// ciphertext (or no terms): the sweep marks such rows whatever the reason.
func (t *Target) incompleteRowsPredicate() string {
	var parts []string
	for _, c := range t.Columns {
		parts = append(parts, fmt.Sprintf("(%s IS NOT NULL AND %s IS NULL)", ident(c.Name), ident(c.Encrypted)))
		if c.HasIndex() {
			parts = append(parts, fmt.Sprintf("(%s IS NOT NULL AND %s IS NULL)", ident(c.Name), ident(c.Index)))
		}
	}
	for i := range t.Uniques {
		parts = append(parts, t.uniqueIncomplete(&t.Uniques[i]))
	}
	return strings.Join(parts, " OR ")
}
