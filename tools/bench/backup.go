package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgphi/pgphi/internal/pgcluster"
	"github.com/pgphi/pgphi/internal/policy"
)

// backupRun compares `pgphi backup` and `pgphi backup verify` with plain
// pg_dump and pg_restore of the same database in the same run.
type backupRun struct {
	db             string
	rows           int64
	dump, restore  time.Duration // plain pg_dump -Fc to a file; pg_restore into a new database of the same cluster
	dumpBytes      int64
	backup, verify time.Duration // pgphi backup; pgphi backup verify (starts its own temporary cluster)
	backupBytes    int64
	err            error
}

// backupBench runs both on from's database (applied, not cleaned up: the
// backup holds plaintext columns, as one taken before cleanup does).
func (e *env) backupBench(ctx context.Context, res *results, from *applyRun) *backupRun {
	br := &backupRun{db: from.db, rows: int64(from.rows)}
	br.err = func() error {
		bin, err := pgcluster.FindBinDir()
		if err != nil {
			return err
		}
		dir := filepath.Join(e.dir, from.db)
		plain := filepath.Join(dir, "plain.dump")
		// One untimed dump first, so that neither side pays for a cold cache.
		if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "--format=custom", "-f", plain, "-d", e.cl.URL(from.db)).CombinedOutput(); err != nil {
			return fmt.Errorf("pg_dump: %v: %s", err, tail(string(out), 5))
		}
		t0 := time.Now()
		if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_dump"), "--format=custom", "-f", plain, "-d", e.cl.URL(from.db)).CombinedOutput(); err != nil {
			return fmt.Errorf("pg_dump: %v: %s", err, tail(string(out), 5))
		}
		br.dump = time.Since(t0)
		if fi, err := os.Stat(plain); err == nil {
			br.dumpBytes = fi.Size()
		}
		target := from.db + "_restored"
		if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+target); err != nil {
			return err
		}
		defer e.drop(ctx, target)
		t0 = time.Now()
		if out, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_restore"), "--no-owner", "--no-privileges", "--disable-triggers", "--exit-on-error", "--single-transaction",
			"-d", e.cl.URL(target), plain).CombinedOutput(); err != nil {
			return fmt.Errorf("pg_restore: %v: %s", err, tail(string(out), 5))
		}
		br.restore = time.Since(t0)
		os.Remove(plain)

		// The manifest is signed with an audit checkpoint key.
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		pem, err := policy.MarshalPrivateKey(priv)
		if err != nil {
			return err
		}
		keyPath := filepath.Join(dir, "audit.key")
		if err := os.WriteFile(keyPath, pem, 0o600); err != nil {
			return err
		}
		cfgText, err := os.ReadFile(from.config)
		if err != nil {
			return err
		}
		cfg := filepath.Join(dir, "pgphi-backup.yaml")
		if err := os.WriteFile(cfg, []byte(strings.Replace(string(cfgText), "tables:\n", "audit: { signing_key: "+keyPath+" }\ntables:\n", 1)), 0o644); err != nil {
			return err
		}
		file := filepath.Join(dir, "backup.pgphi")
		r, err := e.runPgphi(ctx, from.db, "backup", nil, "backup", "--config", cfg, "--out", file)
		if err != nil {
			return err
		}
		br.backup = r.took
		if fi, err := os.Stat(file); err == nil {
			br.backupBytes = fi.Size()
		}
		r, err = e.runPgphi(ctx, from.db, "backup-verify", nil, "backup", "verify", "--config", cfg, file)
		if err != nil {
			return err
		}
		br.verify = r.took
		os.Remove(file)
		logf("backup of %d rows: pg_dump %s (%d MiB), pgphi backup %s (%d MiB) = %.2fx; pg_restore %s, pgphi backup verify %s = %.2fx",
			br.rows, br.dump.Round(time.Millisecond), br.dumpBytes>>20, br.backup.Round(time.Millisecond), br.backupBytes>>20, br.backup.Seconds()/br.dump.Seconds(),
			br.restore.Round(time.Millisecond), br.verify.Round(time.Millisecond), br.verify.Seconds()/br.restore.Seconds())
		return nil
	}()
	if br.err != nil {
		res.note("backup benchmark failed: %v", br.err)
	}
	return br
}

// markdown is the backup section of the report.
func (br *backupRun) markdown() string {
	if br == nil || br.err != nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("#### Backup and verification against plain pg_dump / pg_restore\n\n")
	b.WriteString("| step | time | × plain | bytes |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| pg_dump --format=custom to a file (plaintext) | %s | 1.00 | %s |\n", fmtDur(br.dump), thousands(br.dumpBytes))
	fmt.Fprintf(&b, "| pgphi backup (manifest in the snapshot, pg_dump through AES-256-GCM streaming AEAD, recorded) | %s | %.2f | %s |\n",
		fmtDur(br.backup), br.backup.Seconds()/br.dump.Seconds(), thousands(br.backupBytes))
	fmt.Fprintf(&b, "| pg_restore into a new database of the same cluster | %s | 1.00 | |\n", fmtDur(br.restore))
	fmt.Fprintf(&b, "| pgphi backup verify (decrypt, initdb a temporary cluster, restore, checksum every table, pgphi verify, record) | %s | %.2f | |\n\n",
		fmtDur(br.verify), br.verify.Seconds()/br.restore.Seconds())
	b.WriteString("The database is the demo-search apply's, before cleanup: its plaintext columns are in both dumps; only pgphi's file is encrypted.\n" +
		"`pgphi backup verify` also reads every table twice (checksums) and decrypts every value (pgphi verify), which plain pg_restore does not.\n\n")
	return b.String()
}
