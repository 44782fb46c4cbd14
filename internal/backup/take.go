package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/keys"
)

// Child is how a client program reaches a database: arguments (host, port,
// user, database) and a complete environment (engine.ChildConn).
type Child struct {
	Args []string
	Env  []string
}

// TakeOptions say what Take backs up and how.
type TakeOptions struct {
	Pool   *pgxpool.Pool // the database
	Child  Child         // the same database for pg_dump
	PgDump string        // path of pg_dump (at least the server's version)
	Format string        // FormatTink (default) or FormatAge
	// KEK wraps the stream key (FormatTink); its parameters are the
	// database's (keys.StoredParams).
	KEK keys.KEKProvider
	// Recipients are the age recipients (FormatAge), pinned.
	Recipients []string
	// SigningKey is the audit checkpoint key that signs the manifest.
	SigningKey ed25519.PrivateKey
}

// TakeResult describes a backup written.
type TakeResult struct {
	Manifest Manifest
	Digest   string // hex SHA-256 of the manifest's JSON
	Bytes    int64  // bytes written
	TakenAt  time.Time
}

// Take writes an encrypted backup of the whole database to out: the
// manifest is computed in a repeatable-read snapshot that pg_dump then
// dumps (--snapshot), so both see the same rows; pg_dump's archive streams
// through the encryption, never to disk in plaintext. The backup is recorded
// in pgphi.backups (pgphi.backup_record, which needs pgphi's dba group). On
// error, what was written to out must be discarded. An out with a Sync
// method (a file) is synced before the backup is recorded.
func Take(ctx context.Context, opts TakeOptions, out io.Writer) (*TakeResult, error) {
	if opts.Format == "" {
		opts.Format = FormatTink
	}
	if len(opts.SigningKey) != ed25519.PrivateKeySize {
		return nil, errors.New("backup: no signing key for the manifest")
	}
	id, err := newBackupID()
	if err != nil {
		return nil, err
	}
	h := Header{Format: opts.Format, BackupID: id}
	var key []byte
	var recipients []age.Recipient

	tx, err := opts.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var snapshot string
	if err := tx.QueryRow(ctx, "SELECT pg_catalog.pg_export_snapshot()").Scan(&snapshot); err != nil {
		return nil, fmt.Errorf("backup: exporting the snapshot: %w", err)
	}

	switch opts.Format {
	case FormatTink:
		params, err := keys.StoredParams(ctx, tx)
		if err != nil {
			return nil, fmt.Errorf("backup: the KEK that wraps the backup's key: %w", err)
		}
		if key, err = keys.GenerateDataKey(); err != nil {
			return nil, err
		}
		defer clear(key)
		if h.WrappedKey, err = keys.WrapSecretKey(opts.KEK, params, key); err != nil {
			return nil, fmt.Errorf("backup: wrapping the backup's key: %w", err)
		}
		h.KEK = fromKeys(params)
	case FormatAge:
		if len(opts.Recipients) == 0 {
			return nil, errors.New("backup: the age format needs recipients (backup.age_recipients, pinned)")
		}
		for _, r := range opts.Recipients {
			rc, err := age.ParseX25519Recipient(r)
			if err != nil {
				return nil, fmt.Errorf("backup: age recipient %q: %w", r, err)
			}
			recipients = append(recipients, rc)
		}
		h.Recipients = slices.Clone(opts.Recipients)
	default:
		return nil, fmt.Errorf("backup: unknown format %q (want %s or %s)", opts.Format, FormatTink, FormatAge)
	}

	m := Manifest{Version: 1, BackupID: id, Format: opts.Format, TakenAt: time.Now().UTC().Truncate(time.Second), KeyIDs: []uint32{},
		SigningKey: audit.Fingerprint(opts.SigningKey.Public().(ed25519.PublicKey))}
	if err := tx.QueryRow(ctx, "SELECT pg_catalog.current_database()::text, pg_catalog.current_setting('server_version')").Scan(&m.Database, &m.ServerVersion); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if m.Tables, err = sumTables(ctx, tx); err != nil {
		return nil, err
	}
	if err := tx.QueryRow(ctx, "SELECT COALESCE((SELECT plan_id FROM pgphi.plans ORDER BY created_at DESC, plan_id LIMIT 1), '')").Scan(&m.PlanID); err != nil {
		return nil, fmt.Errorf("backup: reading the plan: %w", err)
	}
	st, err := keys.Status(ctx, tx)
	if err != nil && !errors.Is(err, keys.ErrNotInitialized) {
		return nil, fmt.Errorf("backup: which data keys the backup needs: %w", err)
	}
	if st != nil {
		for _, k := range st.Keys {
			if k.Ciphertexts > 0 || len(k.BlindIndexes) > 0 || k.State == "active" {
				m.KeyIDs = append(m.KeyIDs, k.ID)
			}
		}
	}
	mjson, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(opts.SigningKey, signedMessage(mjson))

	cw := &countingWriter{w: out}
	ew, err := startFile(cw, h, key, recipients, mjson, sig)
	if err != nil {
		return nil, err
	}
	args := append([]string{"--format=custom", "--no-password", "--snapshot=" + snapshot}, opts.Child.Args...)
	cmd := exec.CommandContext(ctx, opts.PgDump, args...)
	cmd.Env = opts.Child.Env
	cmd.Stdout = ew
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 64 << 10}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("backup: pg_dump failed (%v): %s", err, childError(stderr.String()))
	}
	if err := ew.Close(); err != nil {
		return nil, fmt.Errorf("backup: finishing the encryption: %w", err)
	}
	if f, ok := out.(interface{ Sync() error }); ok {
		if err := f.Sync(); err != nil { // on disk before it is recorded
			return nil, fmt.Errorf("backup: writing: %w", err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	res := &TakeResult{Manifest: m, Digest: Digest(mjson), Bytes: cw.n}
	kids := make([]int32, len(m.KeyIDs))
	for i, k := range m.KeyIDs {
		kids[i] = int32(k)
	}
	if err := opts.Pool.QueryRow(ctx, "SELECT pgphi.backup_record($1, $2, $3, $4, $5)", id, m.Format, m.PlanID, kids, res.Digest).Scan(&res.TakenAt); err != nil {
		return nil, fmt.Errorf("backup: recording the backup: %w", err)
	}
	return res, nil
}

// startFile writes the header, starts the encryption and writes the signed
// manifest into it; the archive follows through the returned writer, whose
// Close finishes the file.
func startFile(w io.Writer, h Header, key []byte, recipients []age.Recipient, mjson, sig []byte) (io.WriteCloser, error) {
	hb, err := encodeHeader(h)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hb); err != nil {
		return nil, fmt.Errorf("backup: writing: %w", err)
	}
	ew, err := encryptingWriter(w, h, hb, key, recipients)
	if err != nil {
		return nil, err
	}
	if err := writeManifest(ew, mjson, sig); err != nil {
		return nil, fmt.Errorf("backup: writing: %w", err)
	}
	return ew, nil
}

// childError is the last error line of a client program, redacted: its
// messages can quote values (a COPY line, an invalid input).
func childError(out string) string {
	var last string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "DETAIL") || strings.HasPrefix(l, "CONTEXT") || strings.HasPrefix(l, "LINE") {
			continue
		}
		if strings.Contains(l, "error:") || strings.HasPrefix(l, "FATAL") || strings.HasPrefix(l, "ERROR") {
			last = l
		}
	}
	if last == "" {
		return "no error message"
	}
	return redact.Message(last)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// limitedBuffer keeps the first max bytes written.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
