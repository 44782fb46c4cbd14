package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/hooks"
	"github.com/pgphi/pgphi/internal/pgcluster"
	"github.com/pgphi/pgphi/keys"
)

// ErrMismatch is wrapped when the restored database differs from the
// manifest.
var ErrMismatch = errors.New("backup: the restored database does not match the manifest")

// VerifyOptions say how to open and check a backup.
type VerifyOptions struct {
	// KEK opens a FormatTink backup's key (the KEK of the time the backup
	// was taken: a later rewrap does not change the file).
	KEK keys.KEKProvider
	// Identities open a FormatAge backup.
	Identities []age.Identity
	// Trusted are the keys a manifest may be signed with (the pinned audit
	// public key).
	Trusted []ed25519.PublicKey
	// BinDir holds the PostgreSQL server and client programs of the
	// temporary cluster ("" for pgcluster.FindBinDir).
	BinDir string
	// Check runs on the restored database after the tables matched (pgphi's
	// verification); its summary goes into the result.
	Check func(ctx context.Context, pool *pgxpool.Pool) (string, error)
	// Logf reports progress (nil: none).
	Logf func(format string, args ...any)
}

// VerifyResult says what Verify checked.
type VerifyResult struct {
	Header   Header
	Manifest Manifest
	Digest   string
	Check    string // Check's summary
}

// Verify reads a backup from r, checks its manifest's signature, restores
// it into a temporary local cluster it starts and removes, compares every
// table's row count and checksum with the manifest and runs opts.Check
// there. A changed, truncated or foreign file gives an error wrapping
// ErrCorrupt; a wrong key ErrWrongKey; a manifest signed by another key
// ErrBadSignature; a restore that differs ErrMismatch. It records nothing:
// the caller records the result in the production database.
func Verify(ctx context.Context, r io.Reader, opts VerifyOptions) (*VerifyResult, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	o, err := Open(r, opts.KEK, opts.Identities, opts.Trusted)
	if err != nil {
		return nil, err
	}
	h, m, dr := o.Header, &o.Manifest, o.Archive
	res := &VerifyResult{Header: h, Manifest: *m, Digest: o.Digest}

	logf("starting a temporary local PostgreSQL cluster to restore backup %s into", h.BackupID)
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Fast: true, BinDir: opts.BinDir})
	if err != nil {
		return nil, fmt.Errorf("backup: starting the temporary cluster: %w", err)
	}
	defer cl.Stop()
	const db = "pgphi_restore"
	admin, err := pgx.Connect(ctx, cl.URL("postgres"))
	if err != nil {
		return nil, fmt.Errorf("backup: temporary cluster: %w", err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+db)
	admin.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: temporary cluster: %w", err)
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = pgcluster.FindBinDir(); err != nil {
			return nil, err
		}
	}
	if err := restore(ctx, dr, filepath.Join(binDir, "pg_restore"), cl.Port(), db); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, cl.URL(db))
	if err != nil {
		return nil, fmt.Errorf("backup: temporary cluster: %w", err)
	}
	defer pool.Close()
	var got []TableSum
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		got, err = sumTables(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("backup: reading the restored database: %w", err)
	}
	if diffs := compare(m.Tables, got); len(diffs) > 0 {
		return res, fmt.Errorf("%w: %s", ErrMismatch, strings.Join(diffs, "; "))
	}
	logf("restored %d tables, %d rows: counts and checksums match the manifest", len(m.Tables), m.Rows())
	if opts.Check != nil {
		if res.Check, err = opts.Check(ctx, pool); err != nil {
			return res, fmt.Errorf("backup: verification of the restored database: %w", err)
		}
	}
	return res, nil
}

// Opened is a backup file opened for reading: its header, its manifest
// (signature checked) and the pg_dump archive, decrypted as it is read
// (every read error wraps ErrCorrupt).
type Opened struct {
	Header   Header
	Manifest Manifest
	Digest   string
	Archive  io.Reader
}

// Open reads a backup's header, unwraps its key with kek (FormatTink) or
// opens it with identities (FormatAge), and reads and checks the signed
// manifest. The archive is authenticated as it is read: only a read to its
// end proves it whole.
func Open(r io.Reader, kek keys.KEKProvider, identities []age.Identity, trusted []ed25519.PublicKey) (*Opened, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	h, hb, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	var key []byte
	if h.Format == FormatTink {
		if kek == nil {
			return nil, fmt.Errorf("%w: the backup's key is wrapped by a %s KEK and none was given", ErrWrongKey, h.KEK.Kind)
		}
		key, err = keys.UnwrapSecretKey(kek, h.KEK.keys(), h.WrappedKey)
		if errors.Is(err, keys.ErrWrongKEK) || errors.Is(err, keys.ErrKEKKind) {
			return nil, fmt.Errorf("%w: the KEK given does not unwrap the backup's key; %v", ErrWrongKey, err)
		}
		if err != nil {
			return nil, fmt.Errorf("backup: unwrapping the backup's key: %w", err)
		}
		defer clear(key)
	}
	if h.Format == FormatAge && len(identities) == 0 {
		return nil, fmt.Errorf("%w: the backup is encrypted to age recipients and no age identity was given", ErrWrongKey)
	}
	dr, err := decryptingReader(br, h, hb, key, identities)
	if err != nil {
		return nil, err
	}
	m, mjson, err := readManifest(dr, trusted)
	if err != nil {
		return nil, err
	}
	if m.BackupID != h.BackupID || m.Format != h.Format {
		return nil, fmt.Errorf("%w: the header and the signed manifest disagree on the backup id or format", ErrCorrupt)
	}
	return &Opened{Header: h, Manifest: *m, Digest: Digest(mjson), Archive: dr}, nil
}

// restore feeds the decrypted archive to pg_restore, and reads the stream to
// its end whatever pg_restore does, so that every segment is authenticated.
func restore(ctx context.Context, archive io.Reader, bin string, port int, db string) error {
	cmd := exec.CommandContext(ctx, bin, "--no-owner", "--no-privileges", "--disable-triggers", "--exit-on-error", "--single-transaction",
		"--no-password", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", db)
	cmd.Env = hooks.MinimalEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 64 << 10}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("backup: starting pg_restore: %w", err)
	}
	decrypted := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		writing := true
		for {
			n, rerr := archive.Read(buf)
			if n > 0 && writing {
				if _, werr := stdin.Write(buf[:n]); werr != nil {
					writing = false // pg_restore stopped reading; authenticate the rest anyway
				}
			}
			if rerr == io.EOF {
				stdin.Close()
				decrypted <- nil
				return
			}
			if rerr != nil {
				stdin.Close()
				decrypted <- rerr
				return
			}
		}
	}()
	derr := <-decrypted
	werr := cmd.Wait()
	if derr != nil {
		return derr
	}
	if werr != nil {
		return fmt.Errorf("backup: pg_restore into the temporary cluster failed (%v): %s", werr, childError(stderr.String()))
	}
	return nil
}
