package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/redact"
)

// appendLockKey is the transaction-level advisory lock that serializes
// appenders of every pgphi process on one database ("pgphaudt").
const appendLockKey int64 = 0x7067706861756474

// ErrMirror marks a failure to bring the file mirror up to date. When Append
// returns it, the record is stored in the table (the returned Record is
// valid); the command should still fail loudly.
var ErrMirror = errors.New("audit: mirror file")

// ErrNoTable is returned by Open when pgphi.audit_log does not exist
// (state.Ensure has not run).
var ErrNoTable = errors.New("audit: table pgphi.audit_log does not exist (create pgphi's schema first)")

// Querier runs queries: a *pgxpool.Pool, *pgx.Conn or pgx.Tx satisfies it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Log appends records to pgphi.audit_log and mirrors them, as JSON lines, to
// a file. A Log is safe for concurrent use; any number of Logs in any number
// of processes may append to one database at once and produce one chain.
type Log struct {
	pool    *pgxpool.Pool
	mirror  string // "" = no file
	dbHost  string
	mu      sync.Mutex // serializes this Log's mirror writes (the file lock serializes processes)
	skipped []Problem  // found while mirroring (Skipped)
}

// Open returns a Log appending to pgphi.audit_log through pool and mirroring
// to the file mirrorPath ("" = no mirror). The file is created (mode 0600) if
// it does not exist; its directory must exist.
func Open(ctx context.Context, pool *pgxpool.Pool, mirrorPath string) (*Log, error) {
	var ok bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('pgphi.audit_log') IS NOT NULL").Scan(&ok); err != nil {
		return nil, fmt.Errorf("audit: %w", redact.Error(err))
	}
	if !ok {
		return nil, ErrNoTable
	}
	if mirrorPath != "" {
		f, err := os.OpenFile(mirrorPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMirror, err)
		}
		f.Close()
	}
	cc := pool.Config().ConnConfig
	host := cc.Host
	if host != "" && !strings.HasPrefix(host, "/") {
		host = net.JoinHostPort(host, strconv.Itoa(int(cc.Port)))
	}
	return &Log{pool: pool, mirror: mirrorPath, dbHost: host}, nil
}

// MirrorPath returns the mirror file's path ("" when there is none).
func (l *Log) MirrorPath() string { return l.mirror }

// Append stores r as the next record of the chain and returns it as stored.
//
// Append sends only the fields the caller chooses (event, command, run_id,
// plan_id, actor name, OS user and host, environment, db_host, reason,
// tables, columns, rows, duration_ms, error_class, details) to the definer
// function pgphi.audit_append, which assigns Seq, Time (the database clock,
// UTC microseconds), Prev, Actor.DBRole (the effective database role of the
// session), DBName and Hash itself and inserts the record; any value r has
// for those is ignored. DBHost is the pool's host when r has none. The call
// is its own transaction (a command that rolls back its work still has its
// records), serialized with every other appender by a transaction-level
// advisory lock inside the function, so concurrent appenders produce one
// linear chain without gaps. Before committing, Append checks the stored
// record: its hash recomputed in Go (ComputeHash) must equal the one the
// database computed, and the chosen fields must be the ones sent; otherwise
// nothing is stored and the error says so.
//
// After the commit, Append brings the mirror file up to the new record
// (appending any records other processes stored since the file's last line)
// and fsyncs it. A stored record that does not verify is skipped, not
// copied, and does not make Append fail (Skipped lists it; `pgphi audit
// verify` reports it). If the file itself cannot be written the error wraps
// ErrMirror and the returned record is the one stored. Use a context that
// outlives the command's own cancellation for the final record of a run.
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
	r, payload, err := l.prepare(r)
	if err != nil {
		return Record{}, err
	}
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	stored, err := appendIn(ctx, tx, r, payload)
	if err != nil {
		return Record{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	if err := l.syncTo(ctx, stored.Seq); err != nil {
		return stored, err
	}
	return stored, nil
}

// AppendIn is Append inside tx, a transaction of the caller: the record is
// stored when the caller commits and disappears with a rollback, and its
// actor.db_role is the role the caller set in tx (SET LOCAL ROLE). The
// mirror file is not written (it catches up at the next Append). The
// advisory lock pgphi.audit_append takes is held until tx ends: keep tx
// short after the call.
func (l *Log) AppendIn(ctx context.Context, tx pgx.Tx, r Record) (Record, error) {
	r, payload, err := l.prepare(r)
	if err != nil {
		return Record{}, err
	}
	return appendIn(ctx, tx, r, payload)
}

// prepare clears the fields pgphi.audit_append assigns itself, fills the
// database host, and returns the record with the JSON of the fields the
// caller chooses.
func (l *Log) prepare(r Record) (Record, []byte, error) {
	r.Seq, r.Prev, r.Hash, r.Time = 0, "", "", time.Now()
	r.Actor.DBRole, r.DBName = "", ""
	if r.DBHost == "" {
		r.DBHost = l.dbHost
	}
	r.normalize()
	if err := r.validate(); err != nil {
		return Record{}, nil, err
	}
	payload, err := json.Marshal(chosenFields(&r))
	if err != nil {
		return Record{}, nil, fmt.Errorf("audit: append: %w", err)
	}
	return r, payload, nil
}

func appendIn(ctx context.Context, tx pgx.Tx, r Record, payload []byte) (Record, error) {
	var text string
	if err := tx.QueryRow(ctx, "SELECT pgphi.audit_append($1::text::jsonb)::text", string(payload)).Scan(&text); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	return checkStored(text, r)
}

// ErrEncoding is returned by Append when the record the database stored
// does not match what pgphi computes for it: the SQL and Go canonical
// encodings disagree (a bug), or the function is not pgphi's.
var ErrEncoding = errors.New("audit: the stored record does not match pgphi's encoding")

// checkStored parses the record pgphi.audit_append returned and checks it
// against sent, the record with the caller's fields.
func checkStored(text string, sent Record) (Record, error) {
	rec, err := ParseRecord([]byte(text))
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrEncoding, err)
	}
	if rec.ComputeHash() != rec.Hash {
		return Record{}, fmt.Errorf("%w: record %d: the database's hash differs from the hash recomputed here", ErrEncoding, rec.Seq)
	}
	sent.Seq, sent.Time, sent.Prev, sent.Hash = rec.Seq, rec.Time, rec.Prev, rec.Hash
	sent.Actor.DBRole, sent.DBName = rec.Actor.DBRole, rec.DBName
	if d := diffFields(sent, rec); len(d) > 0 {
		return Record{}, fmt.Errorf("%w: record %d: stored %s differ from the ones sent", ErrEncoding, rec.Seq, strings.Join(d, ", "))
	}
	if rec.Seq < 1 || len(rec.Prev) != len(ZeroHash) || rec.Actor.DBRole == "" {
		return Record{}, fmt.Errorf("%w: record %d: seq, prev or actor.db_role not assigned", ErrEncoding, rec.Seq)
	}
	return rec, nil
}

// chosen is the JSON argument of pgphi.audit_append: exactly the fields a
// caller chooses.
type chosen struct {
	Event   string `json:"event"`
	Command string `json:"command"`
	RunID   string `json:"run_id"`
	PlanID  string `json:"plan_id"`
	Actor   struct {
		Name   string `json:"name"`
		OSUser string `json:"os_user"`
		Host   string `json:"host"`
	} `json:"actor"`
	Environment string            `json:"environment"`
	DBHost      string            `json:"db_host"`
	Reason      string            `json:"reason"`
	Tables      []string          `json:"tables"`
	Columns     []string          `json:"columns"`
	Rows        int64             `json:"rows"`
	DurationMS  int64             `json:"duration_ms"`
	ErrorClass  string            `json:"error_class"`
	Details     map[string]string `json:"details"`
}

func chosenFields(r *Record) chosen {
	c := chosen{Event: r.Event, Command: r.Command, RunID: r.RunID, PlanID: r.PlanID,
		Environment: r.Environment, DBHost: r.DBHost, Reason: r.Reason, Tables: r.Tables, Columns: r.Columns,
		Rows: r.Rows, DurationMS: r.DurationMS, ErrorClass: r.ErrorClass, Details: r.Details}
	c.Actor.Name, c.Actor.OSUser, c.Actor.Host = r.Actor.Name, r.Actor.OSUser, r.Actor.Host
	return c
}

// AppendRefusal records that the connected role was refused command, through
// pgphi.audit_refusal, which every role may execute: it is how the refusal of
// a role that is a member of no pgphi group (and so cannot append) is still
// audited. The record's event is "refused", its error class "policy: access
// denied", its actor.db_role the effective database role; the database
// chooses everything else. A command outside pgphi's fixed list is recorded
// as "unknown". The record reaches a mirror file at the next Append or Sync.
func AppendRefusal(ctx context.Context, q Querier, command string) error {
	rows, err := q.Query(ctx, "SELECT pgphi.audit_refusal($1::text)", command)
	if err != nil {
		return fmt.Errorf("audit: recording the refusal: %w", redact.Error(err))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: recording the refusal: %w", redact.Error(err))
	}
	return nil
}

// Sync brings the mirror file up to the table's current head: it appends
// every record after the file's last line, after checking that the last line
// matches the table and that every copied record verifies and links. It is a
// no-op without a mirror.
func (l *Log) Sync(ctx context.Context) error {
	if l.mirror == "" {
		return nil
	}
	var head int64
	if err := l.pool.QueryRow(ctx, "SELECT COALESCE(max(seq), 0) FROM pgphi.audit_log").Scan(&head); err != nil {
		return fmt.Errorf("%w: reading the head: %v", ErrMirror, redact.Error(err))
	}
	return l.syncTo(ctx, head)
}

// syncTo appends the table's records up to seq upTo to the mirror file,
// holding an exclusive lock on the file so that processes sharing it write
// the records once and in order. A record of the table that does not verify
// (malformed, its hash wrong, not linked to the record before it) is not
// copied, and records missing from the table leave a gap: both are noted in
// Skipped and reported by `pgphi audit verify`, never returned as an error,
// so that a bad row cannot stop pgphi. Errors are about the file itself or
// reading the table, and wrap ErrMirror.
func (l *Log) syncTo(ctx context.Context, upTo int64) (err error) {
	if l.mirror == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.mirror, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMirror, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%w: %v", ErrMirror, cerr)
		}
	}()
	if err := lockFile(f); err != nil {
		return fmt.Errorf("%w: locking %s: %v", ErrMirror, l.mirror, err)
	}
	defer unlockFile(f)

	line, err := lastLine(f)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMirror, l.mirror, err)
	}
	var lastSeq int64
	prev := "" // unknown until the first copied record when the file is empty
	if line != nil {
		last, err := ParseRecord(line)
		if err != nil {
			return fmt.Errorf("%w: %s: the last line is not a valid record", ErrMirror, l.mirror)
		}
		// An edit of the file that kept the stored hash is caught here, not
		// only by verify.
		if last.ComputeHash() != last.Hash {
			return fmt.Errorf("%w: %s: the last line (seq %d) does not match its own hash (run pgphi audit verify)", ErrMirror, l.mirror, last.Seq)
		}
		lastSeq, prev = last.Seq, last.Hash
		var tableHash string
		err = l.pool.QueryRow(ctx, "SELECT hash FROM pgphi.audit_log WHERE seq = $1", lastSeq).Scan(&tableHash)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
		}
		if err != nil || tableHash != last.Hash {
			// A valid table record that differs from a valid last line:
			// file and table diverged consistently, and only an operator
			// can tell which is true; appending would bury the evidence.
			if ok, err := l.validRow(ctx, lastSeq, tableHash); err != nil {
				return err
			} else if ok {
				return fmt.Errorf("%w: %s and pgphi.audit_log differ at seq %d (run pgphi audit verify)", ErrMirror, l.mirror, lastSeq)
			}
			// The table's record was removed, or is not a valid record:
			// a bad row, which must not stop pgphi. The file keeps its
			// copy (evidence) and goes on.
			l.skip(Problem{Seq: lastSeq, Kind: KindDiffers, Detail: fmt.Sprintf("the mirror's record %d differs from pgphi.audit_log's, which is missing or invalid (run pgphi audit verify)", lastSeq)})
			prev = ""
		}
		if lastSeq >= upTo {
			return nil
		}
	}

	rows, err := l.pool.Query(ctx, `SELECT seq, hash, prev, record::text FROM pgphi.audit_log
		WHERE seq > $1 AND seq <= $2 ORDER BY seq`, lastSeq, upTo)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
	}
	defer rows.Close()
	w := bufio.NewWriter(f)
	expect := lastSeq + 1
	for rows.Next() {
		var (
			seq              int64
			hash, prv, jsonb string
		)
		if err := rows.Scan(&seq, &hash, &prv, &jsonb); err != nil {
			return fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
		}
		if seq > expect {
			l.skip(Problem{Seq: expect, Kind: KindGap, Detail: fmt.Sprintf("records %d..%d are missing from pgphi.audit_log; not mirrored", expect, seq-1)})
			prev = ""
		}
		if seq == 1 {
			prev = ZeroHash
		}
		expect = seq + 1
		rec, perr := ParseRecord([]byte(jsonb))
		switch {
		case perr != nil || rec.Seq != seq:
			l.skip(Problem{Seq: seq, Kind: KindMalformed, Detail: fmt.Sprintf("record %d of pgphi.audit_log is not a record of its seq; not mirrored", seq)})
			prev = ""
			continue
		case rec.Hash != hash || rec.Prev != prv || rec.ComputeHash() != rec.Hash:
			l.skip(Problem{Seq: seq, Kind: KindHashMismatch, Detail: fmt.Sprintf("record %d of pgphi.audit_log does not match its hash; not mirrored", seq)})
			prev = ""
			continue
		case prev != "" && rec.Prev != prev:
			l.skip(Problem{Seq: seq, Kind: KindBrokenLink, Detail: fmt.Sprintf("record %d of pgphi.audit_log does not link to record %d; not mirrored", seq, seq-1)})
			prev = ""
			continue
		}
		w.Write(rec.CanonicalJSON())
		w.WriteByte('\n')
		prev = rec.Hash
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%w: writing %s: %v", ErrMirror, l.mirror, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%w: syncing %s: %v", ErrMirror, l.mirror, err)
	}
	if expect <= upTo {
		l.skip(Problem{Seq: expect, Kind: KindGap, Detail: fmt.Sprintf("records %d..%d are missing from pgphi.audit_log; not mirrored", expect, upTo)})
	}
	return nil
}

// validRow reports whether the table holds at seq a record that parses,
// matches its own hash and has hash hash.
func (l *Log) validRow(ctx context.Context, seq int64, hash string) (bool, error) {
	var text string
	err := l.pool.QueryRow(ctx, "SELECT record::text FROM pgphi.audit_log WHERE seq = $1", seq).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
	}
	rec, err := ParseRecord([]byte(text))
	return err == nil && rec.Seq == seq && rec.Hash == hash && rec.ComputeHash() == hash, nil
}

// skip notes a problem found while mirroring (once per seq and kind).
func (l *Log) skip(p Problem) {
	for _, q := range l.skipped {
		if q.Seq == p.Seq && q.Kind == p.Kind {
			return
		}
	}
	l.skipped = append(l.skipped, p)
}

// Skipped returns the problems this Log met while mirroring: stored records
// it did not copy because they do not verify, records missing from the
// table, a table record that differs from the mirror's copy. They do not
// make Append or Sync fail (a bad row must not stop pgphi); a caller may
// warn about them, and `pgphi audit verify` reports them with their seq.
func (l *Log) Skipped() []Problem {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.skipped)
}

// lastLine returns the last line of f without its newline, or nil for an
// empty file. A file that does not end with a newline is an error: a line was
// cut (a crash during a write, or truncation).
func lastLine(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size == 0 {
		return nil, nil
	}
	var one [1]byte
	if _, err := f.ReadAt(one[:], size-1); err != nil {
		return nil, err
	}
	if one[0] != '\n' {
		return nil, errors.New("the file does not end with a complete line (cut by a crash or truncated); move it aside to start a new mirror")
	}
	end := size - 1 // the final newline
	var tail []byte // bytes [start, end), no newline among them
	for start := end; start > 0; {
		n := min(8<<10, start)
		start -= n
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
			return nil, err
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			return append(buf[i+1:], tail...), nil
		}
		tail = append(buf, tail...)
		if len(tail) > 4*MaxRecordSize {
			return nil, errors.New("the last line is longer than any record")
		}
	}
	return tail, nil
}

// NewRunID returns a random run id (128 bits, hex) for the start and end
// records of one command run.
func NewRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LocalActor returns the Actor running this process: the OS user and host
// name, with name as configured (config "actor"; may be empty). DBRole is
// left empty for Append to fill from the session.
func LocalActor(name string) Actor {
	a := Actor{Name: name}
	if u, err := user.Current(); err == nil {
		a.OSUser = u.Username
	}
	if a.OSUser == "" {
		a.OSUser = os.Getenv("USER")
	}
	if h, err := os.Hostname(); err == nil {
		a.Host = h
	}
	return a
}

// syncDir fsyncs a directory so that a file created or renamed in it
// survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
