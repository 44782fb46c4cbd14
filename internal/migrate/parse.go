package migrate

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Statement is one statement of a migration file, as the parser found it.
type Statement struct {
	Index int    // 1-based
	SQL   string // the statement's text, with the comments before it
	Line  int    // 1-based line and column of its first token
	Col   int
	Node  *pg_query.Node
	// NonTx: the statement cannot run inside a transaction block (or, for
	// ALTER TYPE ... ADD VALUE, its value is used later in the same file).
	NonTx bool
	// Ignores are the rules suppressed on this statement by a comment
	// `-- pgphi:ignore RULE reason`, with their reasons.
	Ignores map[string]string
	Hash    string // hex SHA-256 of SQL
}

// File is a parsed migration file.
type File struct {
	Name       string
	Statements []*Statement
}

// NonTx reports whether any statement must run outside a transaction: then
// the whole file runs statement by statement.
func (f *File) NonTx() bool {
	for _, s := range f.Statements {
		if s.NonTx {
			return true
		}
	}
	return false
}

// Hashes are the statements' hashes in order.
func (f *File) Hashes() []string {
	out := make([]string, len(f.Statements))
	for i, s := range f.Statements {
		out[i] = s.Hash
	}
	return out
}

// ErrParse wraps parse errors; the message names file, line and column.
var ErrParse = errors.New("cannot parse migration")

var ignoreRE = regexp.MustCompile(`(?m)--\s*pgphi:ignore\s+([a-z0-9-]+)[ \t]*([^\n]*)$`)

// Parse splits src (the file name is for messages) into statements with
// PostgreSQL's own parser (libpg_query) and classifies them. A file that
// manages transactions itself (BEGIN, COMMIT, ...) is refused: the runner
// owns them.
func Parse(name string, src []byte) (*File, error) {
	text := string(src)
	res, pos, err := parseSQL(text)
	if err != nil {
		if pos > 0 {
			line, col := lineCol(text, pos-1)
			return nil, fmt.Errorf("%w: %s:%d:%d: %v", ErrParse, name, line, col, err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrParse, name, err)
	}
	f := &File{Name: name}
	for _, rs := range res.Stmts {
		start := int(rs.StmtLocation)
		end := len(text)
		if rs.StmtLen > 0 {
			end = start + int(rs.StmtLen)
		}
		seg := text[start:end]
		first := start + firstToken(seg)
		line, col := lineCol(text, first)
		st := &Statement{Index: len(f.Statements) + 1, SQL: strings.TrimSpace(seg), Line: line, Col: col, Node: rs.Stmt}
		st.Hash = hashHex([]byte(st.SQL))
		for _, m := range ignoreRE.FindAllStringSubmatch(seg, -1) {
			if st.Ignores == nil {
				st.Ignores = map[string]string{}
			}
			st.Ignores[m[1]] = strings.TrimSpace(m[2])
		}
		if ts := rs.Stmt.GetTransactionStmt(); ts != nil {
			return nil, fmt.Errorf("%w: %s:%d:%d: transaction control (BEGIN, COMMIT, ...) in a migration: pgphi runs each migration in its own transaction, or statement by statement when one cannot run in a transaction", ErrParse, name, line, col)
		}
		st.NonTx = cannotRunInTransaction(rs.Stmt)
		f.Statements = append(f.Statements, st)
	}
	// ALTER TYPE ... ADD VALUE may run in a transaction, but the new value
	// cannot be used before that transaction commits.
	for i, s := range f.Statements {
		ae := s.Node.GetAlterEnumStmt()
		if ae == nil || ae.NewVal == "" {
			continue
		}
		lit := "'" + strings.ReplaceAll(ae.NewVal, "'", "''") + "'"
		for _, later := range f.Statements[i+1:] {
			if strings.Contains(later.SQL, lit) {
				s.NonTx = true
				break
			}
		}
	}
	return f, nil
}

// cannotRunInTransaction reports statements PostgreSQL refuses inside a
// transaction block.
func cannotRunInTransaction(n *pg_query.Node) bool {
	switch {
	case n.GetIndexStmt() != nil:
		return n.GetIndexStmt().Concurrent
	case n.GetDropStmt() != nil:
		return n.GetDropStmt().Concurrent
	case n.GetReindexStmt() != nil:
		for _, p := range n.GetReindexStmt().Params {
			if d := p.GetDefElem(); d != nil && d.Defname == "concurrently" {
				return true
			}
		}
		return n.GetReindexStmt().Kind == pg_query.ReindexObjectType_REINDEX_OBJECT_SYSTEM ||
			n.GetReindexStmt().Kind == pg_query.ReindexObjectType_REINDEX_OBJECT_DATABASE
	case n.GetVacuumStmt() != nil:
		return n.GetVacuumStmt().IsVacuumcmd
	case n.GetAlterTableStmt() != nil:
		for _, c := range n.GetAlterTableStmt().Cmds {
			if pc := c.GetAlterTableCmd().GetDef().GetPartitionCmd(); pc != nil && pc.Concurrent {
				return true
			}
		}
	case n.GetCreatedbStmt() != nil, n.GetDropdbStmt() != nil, n.GetAlterSystemStmt() != nil,
		n.GetCreateTableSpaceStmt() != nil, n.GetDropTableSpaceStmt() != nil:
		return true
	}
	return false
}

// firstToken is the offset of the first character of seg that is not
// whitespace or inside a comment.
func firstToken(seg string) int {
	i := 0
	for i < len(seg) {
		switch {
		case seg[i] == ' ' || seg[i] == '\t' || seg[i] == '\n' || seg[i] == '\r':
			i++
		case strings.HasPrefix(seg[i:], "--"):
			j := strings.IndexByte(seg[i:], '\n')
			if j < 0 {
				return len(seg)
			}
			i += j + 1
		case strings.HasPrefix(seg[i:], "/*"):
			j := strings.Index(seg[i+2:], "*/")
			if j < 0 {
				return len(seg)
			}
			i += j + 4
		default:
			return i
		}
	}
	return i
}

func lineCol(text string, off int) (int, int) {
	if off > len(text) {
		off = len(text)
	}
	line := 1 + strings.Count(text[:off], "\n")
	col := off - strings.LastIndexByte(text[:off], '\n')
	return line, col
}

// Tables lists the tables the file's statements create, alter, index,
// write or drop, as schema.table (public when unqualified), in order of
// first mention.
func (f *File) Tables() []string {
	var out []string
	seen := map[string]bool{}
	add := func(rv *pg_query.RangeVar) {
		if rv == nil || rv.Relname == "" {
			return
		}
		s := rv.Schemaname
		if s == "" {
			s = "public"
		}
		if k := s + "." + rv.Relname; !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, st := range f.Statements {
		n := st.Node
		switch {
		case n.GetCreateStmt() != nil:
			add(n.GetCreateStmt().Relation)
		case n.GetAlterTableStmt() != nil:
			add(n.GetAlterTableStmt().Relation)
		case n.GetIndexStmt() != nil:
			add(n.GetIndexStmt().Relation)
		case n.GetInsertStmt() != nil:
			add(n.GetInsertStmt().Relation)
		case n.GetUpdateStmt() != nil:
			add(n.GetUpdateStmt().Relation)
		case n.GetDeleteStmt() != nil:
			add(n.GetDeleteStmt().Relation)
		case n.GetRenameStmt() != nil:
			add(n.GetRenameStmt().Relation)
		case n.GetDropStmt() != nil && n.GetDropStmt().RemoveType == pg_query.ObjectType_OBJECT_TABLE:
			for _, o := range n.GetDropStmt().Objects {
				if l := o.GetList(); l != nil {
					var parts []string
					for _, it := range l.Items {
						parts = append(parts, it.GetString_().GetSval())
					}
					rv := &pg_query.RangeVar{Relname: parts[len(parts)-1]}
					if len(parts) > 1 {
						rv.Schemaname = parts[len(parts)-2]
					}
					add(rv)
				}
			}
		}
	}
	return out
}

// TablesOf lists the tables the up files of ms change (File.Tables), in
// order of first mention; a file that does not parse adds none.
func TablesOf(ms []*Migration) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range ms {
		f, err := Parse(m.UpFile, m.Up)
		if err != nil {
			continue
		}
		for _, t := range f.Tables() {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}
