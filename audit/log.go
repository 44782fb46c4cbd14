package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/redact"
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
	pool   *pgxpool.Pool
	mirror string // "" = no file
	dbHost string
	mu     sync.Mutex // serializes this Log's mirror writes (the file lock serializes processes)
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
// Append assigns Seq, Time (the database clock, UTC microseconds), Prev and
// Hash, ignoring any values r has for them. It fills Actor.DBRole with the
// session's current_user, DBName with current_database() and DBHost with the
// pool's host when they are empty. The insert is its own transaction (a
// command that rolls back its work still has its records), serialized with
// every other appender by a transaction-level advisory lock, so concurrent
// appenders produce one linear chain without gaps.
//
// After the commit, Append brings the mirror file up to the new record
// (appending any records other processes stored since the file's last line)
// and fsyncs it. If that fails the error wraps ErrMirror and the returned
// record is the one stored. Use a context that outlives the command's own
// cancellation for the final record of a run.
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
	r.Seq, r.Prev, r.Hash, r.Time = 0, "", "", time.Now()
	r.normalize()
	if err := r.validate(); err != nil {
		return Record{}, err
	}
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", appendLockKey); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	var (
		now          time.Time
		role, dbName string
	)
	// Read committed: this statement's snapshot is taken after the lock is
	// held, so it sees the head the previous appender committed.
	err = tx.QueryRow(ctx, `SELECT clock_timestamp(), current_user, current_database(),
		COALESCE((SELECT seq FROM pgphi.audit_log ORDER BY seq DESC LIMIT 1), 0),
		COALESCE((SELECT hash FROM pgphi.audit_log ORDER BY seq DESC LIMIT 1), $1)`, ZeroHash).
		Scan(&now, &role, &dbName, &r.Seq, &r.Prev)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	r.Seq++
	r.Time = now.UTC().Truncate(time.Microsecond)
	if r.Actor.DBRole == "" {
		r.Actor.DBRole = role
	}
	if r.DBName == "" {
		r.DBName = dbName
	}
	if r.DBHost == "" {
		r.DBHost = l.dbHost
	}
	if err := r.validate(); err != nil { // the filled-in fields too
		return Record{}, err
	}
	r.Hash = r.ComputeHash()
	if _, err := tx.Exec(ctx, `INSERT INTO pgphi.audit_log (seq, recorded_at, record, hash, prev)
		VALUES ($1, $2, $3::jsonb, $4, $5)`, r.Seq, r.Time, string(r.CanonicalJSON()), r.Hash, r.Prev); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", redact.Error(err))
	}
	if err := l.syncTo(ctx, r.Seq); err != nil {
		return r, err
	}
	return r, nil
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
// the records once and in order.
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
		// An edit that kept the stored hash is caught here, not only by verify.
		if last.ComputeHash() != last.Hash {
			return fmt.Errorf("%w: %s: the last line (seq %d) does not match its own hash (run pgphi audit verify)", ErrMirror, l.mirror, last.Seq)
		}
		lastSeq, prev = last.Seq, last.Hash
		var tableHash string
		err = l.pool.QueryRow(ctx, "SELECT hash FROM pgphi.audit_log WHERE seq = $1", lastSeq).Scan(&tableHash)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && tableHash != last.Hash) {
			return fmt.Errorf("%w: %s and pgphi.audit_log differ at seq %d (run pgphi audit verify)", ErrMirror, l.mirror, lastSeq)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
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
	var copyErr error
	for rows.Next() {
		var (
			seq              int64
			hash, prv, jsonb string
		)
		if err := rows.Scan(&seq, &hash, &prv, &jsonb); err != nil {
			copyErr = fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
			break
		}
		rec, perr := ParseRecord([]byte(jsonb))
		if prev == "" && lastSeq == 0 && seq == 1 {
			prev = ZeroHash
		}
		if perr != nil || rec.Seq != seq || rec.Hash != hash || rec.Prev != prv || rec.ComputeHash() != rec.Hash ||
			(prev != "" && (seq != expect || rec.Prev != prev)) {
			copyErr = fmt.Errorf("%w: record %d of pgphi.audit_log does not verify; not mirrored (run pgphi audit verify)", ErrMirror, seq)
			break
		}
		w.Write(rec.CanonicalJSON())
		w.WriteByte('\n')
		prev, expect = rec.Hash, seq+1
	}
	if copyErr == nil {
		if err := rows.Err(); err != nil {
			copyErr = fmt.Errorf("%w: %v", ErrMirror, redact.Error(err))
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%w: writing %s: %v", ErrMirror, l.mirror, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%w: syncing %s: %v", ErrMirror, l.mirror, err)
	}
	if copyErr == nil && expect <= upTo {
		copyErr = fmt.Errorf("%w: record %d is missing from pgphi.audit_log; not mirrored (run pgphi audit verify)", ErrMirror, expect)
	}
	return copyErr
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
