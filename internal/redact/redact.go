// Package redact keeps values that could be PHI out of what pgphi prints,
// logs and audits.
//
// It redacts on structure, never by pairing quotes: a value may itself
// contain quotes, brackets, commas and newlines, so no closing delimiter can
// be trusted to end it. Instead, text is kept only up to the first value
// marker (a place where the templates of PostgreSQL, pgx, the Go standard
// library and pg_repack start a value) and everything after it on that line
// is replaced by Placeholder; the lines after such a cut are dropped too,
// because a value may span lines and nothing marks where it ends.
//
//   - A *pgconn.PgError is rebuilt from its fields (see Describe): severity,
//     the message up to its first value marker, SQLSTATE and the schema,
//     table, column and constraint names the server reports. DETAIL, WHERE,
//     CONTEXT, the internal query and (except for pgphi's own errors) HINT are
//     dropped. A message a PL/pgSQL RAISE wrote (the application's code) is
//     dropped whole unless it is one of pgphi's.
//   - Any other text (Message, and the parts of an error chain that are not
//     PostgreSQL errors nor pgphi's own error types) is cut at the first
//     generic value marker; see Message for the list and why.
package redact

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// Placeholder replaces the text cut at a value marker.
const Placeholder = "[redacted]"

// Mask is the placeholder of earlier versions, kept for callers; redacted
// text now contains Placeholder (which Mask contains).
const Mask = `"` + Placeholder + `"`

var (
	mu     sync.RWMutex
	idents = map[string]bool{}
)

// AllowIdentifiers registers names (tables, columns, constraints from the
// config and catalog) that may stay in a PostgreSQL error message where the
// server quotes an object name (`column "first_name"`). Free text (Message)
// never keeps quoted text: its templates are unknown.
func AllowIdentifiers(names ...string) {
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		if n != "" {
			idents[n] = true
		}
	}
}

// resetIdentifiers empties the registry (tests).
func resetIdentifiers() {
	mu.Lock()
	defer mu.Unlock()
	idents = map[string]bool{}
}

// marker is a place where a value starts. keep is how much of the matched
// marker stays in the output (a phrase such as "unable to encode" stays as
// context; a quote or bracket goes).
type marker struct {
	text string
	keep int
}

// genericMarkers start a value in free text. Chosen conservatively: every
// delimiter that a formatter of values uses to open one, and the phrases of
// the libraries pgphi uses that print a value without any delimiter.
//
//   - `"`: Go's %q and %#v of strings (strconv, time.Parse, url.Parse, pgx),
//     PostgreSQL's `: "value"`, `value "v" is out of range`, `"v" is out of
//     range for type real`, and any quoted composite or array literal.
//   - `'`: SQL literals and Go runes (`invalid character 'x'`); only where it
//     opens (not between two letters or digits, as in "can't").
//   - `=`: key=value text, PostgreSQL's `Key (ssn)=(value)`, connection
//     strings (`password=`).
//   - `[`, `{`: arrays (`{"a","b"}`), Go's %v of slices, maps and structs,
//     JSON.
//   - `(` only where a template opens a value with it: `Key (`, `key (`,
//     `contains (` (PostgreSQL's `Failing row contains (...)`), `)=(` and a
//     composite literal `("`. Elsewhere "(" is not a marker: pgphi's own
//     messages put their advice in parentheses ("(run `pgphi verify`)",
//     "(32 random bytes, raw, hex or base64 ...)"), and no library pgphi
//     uses writes a bare value after one.
//   - phrases after which pgx, encoding/json and YAML print a bare value
//     (`unable to encode 123`, `cannot parse UUID [..]`, `cannot unmarshal
//     number 42`, `unexpected trailing data: x`, `bad interval second
//     format: x`, `byte sequence 0xe2 0x82`): the phrase stays, the rest goes.
//   - PostgreSQL's secondary fields when they appear as text (pg_repack and
//     psql print them): DETAIL:, CONTEXT:, WHERE:, QUERY:, STATEMENT:, HINT:
//     in capitals, and an echoed statement line (`LINE 1: ...`); and the
//     server's message itself after libpq's "ERROR:  " (see serverText).
//
// Backticks are not markers: pgphi's own hints quote commands with them and
// no library that handles row values quotes values with them.
var genericMarkers = []marker{
	{`"`, 0}, {`=`, 0}, {`[`, 0}, {`{`, 0},
	{"key (", 3}, {"contains (", 8}, {`("`, 0},
	{"unable to encode", 16}, {"cannot encode", 13}, {"failed to encode", 16},
	{"cannot parse", 12}, {"cannot unmarshal", 16}, {"instead got", 11},
	{"trailing data", 13}, {"numeric incomplete", 18}, {"record incomplete", 17},
	{"format:", 7}, {"failing row contains", 20}, {"byte sequence", 13},
}

// secondaryFields are PostgreSQL's fields that carry values, as psql and
// pg_repack print them (case-sensitive).
var secondaryFields = regexp.MustCompile(`(^|\s)(DETAIL|CONTEXT|WHERE|QUERY|STATEMENT|HINT):|^\s*LINE \d+:|^\s*\^\s*$`)

// serverText is libpq's prefix of a server message ("ERROR:  ", two
// spaces), as pg_repack and psql print it. In free text the message's
// template is unknown (an application's RAISE writes anything, with no
// marker), so all of it goes; the severity stays.
var serverText = regexp.MustCompile(`\b(ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|LOG|DEBUG):  `)

// Message redacts free text (a hook's or pg_repack's output, the text of an
// error that is not a PostgreSQL error): each line is kept up to its first
// value marker (see genericMarkers); a line with a marker ends with
// Placeholder and the lines after it are dropped, since a value may contain
// newlines. Lines before the first marker are kept whole. Quoted text is
// always cut, whatever it holds; extra is accepted for compatibility and
// ignored (identifiers are kept only in PostgreSQL errors, whose templates
// are known: see Describe).
func Message(msg string, extra ...string) string {
	_ = extra
	return cutText(msg, genericMarkers, true, nil)
}

// cutText applies the line rules with the given markers. free says msg is
// free text, where libpq's server text is cut too; ident, if not nil, reports the
// length of an allowed quoted identifier starting at a double quote.
func cutText(msg string, markers []marker, free bool, ident func(s string, i int) int) string {
	var out []string
	for _, line := range strings.Split(msg, "\n") {
		if kept, cut := cutLine(line, markers, free, ident); cut {
			out = append(out, kept)
			break
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// cutLine returns line cut at its first value marker, ending in Placeholder,
// and true; or line and false when it holds no marker.
func cutLine(line string, markers []marker, free bool, ident func(s string, i int) int) (string, bool) {
	lower := asciiLower(line)
	best, keep := len(line), 0
	if loc := secondaryFields.FindStringIndex(line); loc != nil {
		best = loc[0] + len(line[loc[0]:loc[1]]) - len(strings.TrimLeft(line[loc[0]:loc[1]], " \t"))
	}
	if free {
		if loc := serverText.FindStringIndex(line); loc != nil && loc[0] < best {
			best, keep = loc[0], loc[1]-loc[0]
		}
	}
	for _, m := range markers {
		from := 0
		for {
			j := strings.Index(lower[from:], m.text)
			if j < 0 {
				break
			}
			j += from
			if j >= best {
				break
			}
			if m.text == `"` && ident != nil {
				if n := ident(line, j); n > 0 {
					from = j + n
					continue
				}
			}
			best, keep = j, m.keep
			break
		}
	}
	// A single quote opens a value where it does not sit between two
	// letters or digits (an apostrophe: "can't", "pgphi's").
	for j := 0; j < best; j++ {
		if line[j] == '\'' && quoteOpens(line, j) {
			best, keep = j, 0
			break
		}
	}
	if best == len(line) {
		return line, false
	}
	if keep > 0 {
		return strings.TrimRight(line[:best+keep], " ") + " " + Placeholder, true
	}
	return line[:best] + Placeholder, true
}

func quoteOpens(s string, i int) bool {
	if i == 0 || i == len(s)-1 {
		return true
	}
	return !(isWord(s[i-1]) && isWord(s[i+1]))
}

func isWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// asciiLower lowercases ASCII letters only, so that byte offsets in the
// result are offsets in s (strings.ToLower may change lengths).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Error returns err with its text redacted on structure: every PostgreSQL
// error in its chain is rendered by Describe; the text that pgphi's own
// error types add is kept (pgphi never puts values in errors); the text any
// other error adds (fmt wrappers, pgx, strconv, encoding/json, os/exec) is
// cut at its first value marker as Message does. The result unwraps to err
// so errors.Is/As keep working; callers that print must print its Error().
// An error whose text needs no change is returned as is.
func Error(err error) error {
	if err == nil {
		return nil
	}
	msg := render(err)
	if msg == err.Error() {
		return err
	}
	r := &redacted{msg: msg, cause: err}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		r.code = pgErr.Code
	}
	return r
}

// render returns the redacted text of err and its chain.
func render(err error) string {
	switch e := err.(type) {
	case *redacted:
		return e.msg
	case *pgconn.PgError:
		return Describe(e)
	}
	var kids []error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if k := u.Unwrap(); k != nil {
			kids = []error{k}
		}
	case interface{ Unwrap() []error }:
		for _, k := range u.Unwrap() {
			if k != nil {
				kids = append(kids, k)
			}
		}
	}
	text := err.Error()
	trusted := ownType(err)
	// Split text into the parts this error adds and its children's texts.
	var parts []string // own text before each child, then the tail
	pos := 0
	for _, k := range kids {
		kt := k.Error()
		j := strings.Index(text[pos:], kt)
		if j < 0 || kt == "" {
			// The child's text is not quoted verbatim: this error's text
			// is all its own.
			if trusted {
				return text
			}
			return Message(text)
		}
		parts = append(parts, text[pos:pos+j])
		pos += j + len(kt)
	}
	parts = append(parts, text[pos:])
	var b strings.Builder
	for i, p := range parts {
		if !trusted {
			q := Message(p)
			if q != p && i < len(kids) {
				q += ": "
			}
			p = q
		}
		b.WriteString(p)
		if i < len(kids) {
			b.WriteString(render(kids[i]))
		}
	}
	return b.String()
}

// ownType reports whether err's concrete type is one of pgphi's (its text is
// written by pgphi, which never puts values in errors).
func ownType(err error) bool {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	p := t.PkgPath()
	return strings.HasPrefix(p, "github.com/pgphi/pgphi/") && p != "github.com/pgphi/pgphi/internal/redact"
}

// pgMarkers start a value in a PostgreSQL message: the same as in free text
// (the server writes values in parentheses only in DETAIL, which is dropped).
var pgMarkers = genericMarkers

// Data exceptions (class 22) put the offending value after a colon
// (`invalid input syntax for type integer: "..."`, `requested character too
// large for encoding: 1114112`): there, ": " is a marker too.
var pgDataMarkers = append([]marker{{":", 1}}, pgMarkers...)

// objectKinds precede a quoted object name in PostgreSQL's messages
// (`column "x" of relation "y"`, `constraint "z"`); no message template puts
// a data value there.
var objectKinds = []string{
	"column ", "relation ", "table ", "constraint ", "index ", "schema ", "type ",
	"sequence ", "view ", "trigger ", "function ", "role ", "database ", "policy ",
	"extension ", "domain ",
}

// Describe renders a PostgreSQL error without values: severity, message up
// to its first value marker, SQLSTATE and the object names the server
// reports. A quoted name stays only where the server writes an object name
// (after "column ", "relation ", "constraint "...) and only if it is one of
// the error's own schema/table/column/constraint/type names, a name given to
// AllowIdentifiers, or a pgphi object; other quoted text is a value.
func Describe(e *pgconn.PgError) string {
	own := strings.HasPrefix(e.Message, "pgphi")
	// A RAISE in PL/pgSQL code writes whatever that code chose, possibly
	// NEW.ssn, in the message and in the object-name fields: only pgphi's
	// own RAISEs are kept.
	userText := !own && (strings.HasPrefix(e.Code, "P0") || strings.Contains(e.Where, "at RAISE"))
	names := []string{e.SchemaName, e.TableName, e.ColumnName, e.ConstraintName, e.DataTypeName}
	var b strings.Builder
	b.WriteString(e.Severity)
	b.WriteString(": ")
	if userText {
		b.WriteString(Placeholder)
	} else if systemError(e.Code) {
		// Insufficient resources (53: disk full, out of memory) and system
		// errors (58: I/O) name files and the operating system's error,
		// never a value: the operator needs the whole line ("could not
		// extend file ...: No space left on device").
		b.WriteString(firstLine(e.Message))
	} else {
		markers := pgMarkers
		if strings.HasPrefix(e.Code, "22") {
			markers = pgDataMarkers
		}
		b.WriteString(cutText(firstLine(e.Message), markers, false, identAt(names)))
	}
	b.WriteString(" (SQLSTATE ")
	b.WriteString(e.Code)
	b.WriteString(")")
	var where []string
	if !userText {
		if e.TableName != "" {
			where = append(where, "table "+e.TableName)
		}
		if e.ColumnName != "" {
			where = append(where, "column "+e.ColumnName)
		}
		if e.ConstraintName != "" {
			where = append(where, "constraint "+e.ConstraintName)
		}
	}
	if len(where) > 0 {
		b.WriteString(" [" + strings.Join(where, ", ") + "]")
	}
	if own && e.Hint != "" {
		if h := firstLine(e.Hint); Message(h) == h {
			b.WriteString(" HINT: " + h)
		}
	}
	return b.String()
}

// systemError reports whether code is of class 53 (insufficient resources)
// or 58 (system error), whose messages carry file names and OS errors only.
func systemError(code string) bool {
	return strings.HasPrefix(code, "53") || strings.HasPrefix(code, "58")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// identAt returns a function reporting the length of an allowed quoted
// object name starting at the double quote s[i] (0 if there is none).
func identAt(names []string) func(s string, i int) int {
	return func(s string, i int) int {
		kind := false
		for _, k := range objectKinds {
			if strings.HasSuffix(asciiLower(s[:i]), k) {
				kind = true
				break
			}
		}
		if !kind {
			return 0
		}
		end := strings.IndexByte(s[i+1:], '"')
		if end <= 0 {
			return 0
		}
		name := s[i+1 : i+1+end]
		if !allowedName(name, names) {
			return 0
		}
		return end + 2
	}
}

var pgphiName = regexp.MustCompile(`^pgphi(_[a-z0-9_]*)?$|^[a-z0-9_]+$`)

// allowedName reports whether name (possibly schema-qualified) consists of
// allowed identifiers.
func allowedName(name string, names []string) bool {
	mu.RLock()
	defer mu.RUnlock()
	parts := strings.Split(name, ".")
	for i, p := range parts {
		ok := idents[p] || p == "public" || p == "pg_catalog" || p == "pg_temp"
		for _, n := range names {
			if n != "" && n == p {
				ok = true
			}
		}
		// pgphi's own objects: schema pgphi and whatever is in it.
		if !ok && (p == "pgphi" || strings.HasPrefix(p, "pgphi_") && pgphiName.MatchString(p)) {
			ok = true
		}
		if !ok && i > 0 && parts[0] == "pgphi" && pgphiName.MatchString(p) {
			ok = true
		}
		if !ok {
			return false
		}
	}
	return true
}

type redacted struct {
	msg   string
	code  string
	cause error
}

func (r *redacted) Error() string { return r.msg }

// SQLState returns the SQLSTATE of the redacted PostgreSQL error.
func (r *redacted) SQLState() string { return r.code }

// Unwrap keeps errors.Is/As working for non-PostgreSQL causes (context
// cancellation, sentinel errors); callers that print must print Error().
func (r *redacted) Unwrap() error { return r.cause }
