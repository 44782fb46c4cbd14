package engine

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// purge rewrites the table so that no old row version with plaintext stays in
// its files: DROP COLUMN only hides the values. pg_repack rewrites online;
// VACUUM FULL holds an ACCESS EXCLUSIVE lock for the whole rewrite.
func (r *Runner) purge(ctx context.Context, t *Target, opt CleanupOptions) error {
	var purged bool
	if err := r.Pool.QueryRow(ctx, `SELECT bool_and(purged_at IS NOT NULL) FROM pgphi.protected_columns WHERE table_name = $1`, t.QualifiedName()).Scan(&purged); err != nil {
		return err
	}
	if purged {
		return nil
	}
	method := opt.Purge
	if method == "" || method == "auto" {
		method = "vacuum-full"
		if repackAvailable(ctx, r) {
			method = "repack"
		}
	}
	switch method {
	case "repack":
		r.logf("    purge %s with pg_repack (online rewrite)", t.QualifiedName())
		if err := r.runRepack(ctx, t); err != nil {
			return err
		}
	default:
		r.logf("    purge %s with VACUUM FULL: WARNING: it locks the table against reads and writes until the rewrite ends (install pg_repack for an online purge)", t.QualifiedName())
		if _, err := r.Pool.Exec(ctx, "VACUUM (FULL, ANALYZE) "+t.Ident()); err != nil {
			return fmt.Errorf("purging %s: %w", t.QualifiedName(), err)
		}
	}
	if _, err := r.Pool.Exec(ctx, "ANALYZE "+t.Ident()); err != nil {
		return err
	}
	_, err := r.Pool.Exec(ctx, `UPDATE pgphi.protected_columns SET purged_at = now() WHERE table_name = $1`, t.QualifiedName())
	return err
}

// repackBinary finds pg_repack: on PATH, else beside the server's own
// binaries in Debian's layout.
func repackBinary(ctx context.Context, r *Runner) string {
	if p, err := exec.LookPath("pg_repack"); err == nil {
		return p
	}
	var num int
	if err := r.Pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return ""
	}
	p := fmt.Sprintf("/usr/lib/postgresql/%d/bin/pg_repack", num/10000)
	if _, err := exec.LookPath(p); err == nil {
		return p
	}
	return ""
}

// repackAvailable reports whether pg_repack can run here: the client binary
// and the extension (created when the server offers it and we may).
func repackAvailable(ctx context.Context, r *Runner) bool {
	if repackBinary(ctx, r) == "" {
		return false
	}
	var installed, offered bool
	err := r.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_repack'),
		EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_repack')`).Scan(&installed, &offered)
	if err != nil || (!installed && !offered) {
		return false
	}
	if !installed {
		if _, err := r.Pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_repack"); err != nil {
			r.logf("    pg_repack is installed but its extension cannot be created here (%v)", err)
			return false
		}
	}
	return true
}

func (r *Runner) runRepack(ctx context.Context, t *Target) error {
	bin := repackBinary(ctx, r)
	if bin == "" || !repackAvailable(ctx, r) {
		return fmt.Errorf("pg_repack is not available: install the postgresql-NN-repack package or use --purge vacuum-full")
	}
	cfg := r.Pool.Config().ConnConfig
	for attempt := 1; ; attempt++ {
		cmd := exec.CommandContext(ctx, bin, "--no-superuser-check", "-h", cfg.Host, "-p", fmt.Sprint(cfg.Port), "-U", cfg.User, "-d", cfg.Database, "-t", t.QualifiedName())
		if cfg.Password != "" {
			cmd.Env = append(cmd.Environ(), "PGPASSWORD="+cfg.Password)
		}
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		// pg_repack's output names tables, never values; keep its last line.
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		// The pg_repack of an interrupted cleanup may still be running: it
		// is not killed with pgphi on purpose, because an interrupted
		// pg_repack leaves its trigger and log table behind, while one that
		// finishes leaves the table clean (rewritten once more by this run).
		if strings.Contains(string(out), "Another pg_repack command may be running") && attempt < repackAttempts {
			r.logf("    another pg_repack is working on %s (an interrupted cleanup's?); waiting for it to finish", t.QualifiedName())
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(repackWait):
			}
			continue
		}
		return fmt.Errorf("pg_repack of %s failed: %v: %s", t.QualifiedName(), err, last)
	}
}

// How long runRepack waits for another pg_repack of the same table.
const (
	repackAttempts = 60
	repackWait     = 5 * time.Second
)
