package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/hooks"
)

// Purge methods, as CleanupOptions.Purge spells them ("" or "auto" lets
// ChoosePurge decide).
const (
	PurgeAuto       = "auto"
	PurgeRepack     = "repack"
	PurgeVacuumFull = "vacuum-full"
	// PurgeNone is ChoosePurge's answer when every table is purged already.
	PurgeNone = "none"
)

// ChoosePurge decides how cleanup will purge the old row versions, before
// anything is dropped, so that a purge that cannot run refuses the cleanup
// while the plaintext is still there:
//
//   - "repack" (pg_repack, an online rewrite) when opt.Purge is "auto" or
//     "repack" and pg_repack is usable: a trusted binary (see repackBinary),
//     the extension, and a TLS policy that libpq can honour;
//   - "vacuum-full" when opt.Purge is "vacuum-full", or when it is "auto",
//     pg_repack is not usable and opt.VacuumFull says the operator accepts
//     VACUUM FULL, which locks the table against reads and writes for the
//     whole rewrite;
//   - otherwise an error wrapping ErrRefused that says why pg_repack cannot
//     run and how to proceed. VACUUM FULL is never a silent fallback.
//
// Under a pin_sha256 policy pg_repack is refused: libpq cannot check a pin.
// It returns PurgeNone when every table of the plan is purged already.
func (r *Runner) ChoosePurge(ctx context.Context, opt CleanupOptions) (string, error) {
	method := opt.Purge
	if method == "" {
		method = PurgeAuto
	}
	switch method {
	case PurgeAuto, PurgeRepack, PurgeVacuumFull:
	default:
		return "", fmt.Errorf("unknown purge method `%s`: use auto, repack or vacuum-full", opt.Purge)
	}
	var names []string
	for _, t := range r.Plan.Tables {
		names = append(names, t.QualifiedName())
	}
	var todo bool
	if err := r.Pool.QueryRow(ctx, `SELECT coalesce(bool_or(purged_at IS NULL), false) FROM pgphi.protected_columns WHERE table_name = ANY($1)`, names).Scan(&todo); err != nil {
		return "", err
	}
	if !todo {
		return PurgeNone, nil
	}
	if method == PurgeVacuumFull {
		return PurgeVacuumFull, nil
	}
	why := r.repackUsable(ctx)
	switch {
	case why == nil:
		return PurgeRepack, nil
	case method == PurgeRepack:
		return "", fmt.Errorf("%w: --purge repack: %v", ErrRefused, why)
	case opt.VacuumFull:
		r.logf("    pg_repack cannot be used (%v): purging with VACUUM FULL, as --vacuum-full allows", why)
		return PurgeVacuumFull, nil
	}
	return "", fmt.Errorf("%w: nothing was dropped: the plaintext cannot be purged online, and VACUUM FULL would lock each table against reads and writes "+
		"for the whole rewrite: run cleanup with --vacuum-full to accept that, or make pg_repack usable; pg_repack: %v", ErrRefused, why)
}

// purge rewrites the table so that no old row version with plaintext stays in
// its files: DROP COLUMN only hides the values. pg_repack rewrites online;
// VACUUM FULL holds an ACCESS EXCLUSIVE lock for the whole rewrite and runs
// only when ChoosePurge says so.
func (r *Runner) purge(ctx context.Context, t *Target, opt CleanupOptions) error {
	var purged bool
	if err := r.Pool.QueryRow(ctx, `SELECT bool_and(purged_at IS NOT NULL) FROM pgphi.protected_columns WHERE table_name = $1`, t.QualifiedName()).Scan(&purged); err != nil {
		return err
	}
	if purged {
		return nil
	}
	method, err := r.ChoosePurge(ctx, opt)
	if err != nil {
		return err
	}
	switch method {
	case PurgeRepack:
		r.logf("    purge %s with pg_repack (online rewrite)", t.QualifiedName())
		if err := r.runRepack(ctx, t); err != nil {
			return err
		}
	case PurgeVacuumFull:
		r.logf("    purge %s with VACUUM FULL: WARNING: it locks the table against reads and writes until the rewrite ends (install pg_repack for an online purge)", t.QualifiedName())
		if _, err := r.Pool.Exec(ctx, "VACUUM (FULL, ANALYZE) "+t.Ident()); err != nil {
			return fmt.Errorf("purging %s: %w", t.QualifiedName(), err)
		}
	default:
		return fmt.Errorf("purging %s: no purge method (%s)", t.QualifiedName(), method)
	}
	if _, err := r.Pool.Exec(ctx, "ANALYZE "+t.Ident()); err != nil {
		return err
	}
	_, err = r.Pool.Exec(ctx, `UPDATE pgphi.protected_columns SET purged_at = now() WHERE table_name = $1`, t.QualifiedName())
	return err
}

// repackDirs are the only directories pg_repack is taken from, in order: the
// server major version's own bin directory (Debian/Ubuntu, then the PGDG RPM
// layout), then the system's. PATH is never searched: a pg_repack planted in
// a directory on the operator's PATH would receive the database password.
// A variable for tests.
var repackDirs = func(major int) []string {
	return []string{
		fmt.Sprintf("/usr/lib/postgresql/%d/bin", major),
		fmt.Sprintf("/usr/pgsql-%d/bin", major),
		"/usr/bin",
		"/usr/local/bin",
	}
}

// repackBinary returns the absolute path of a trusted pg_repack: the first
// one found in repackDirs (for the server's major version) that is a regular
// executable file, neither it nor its directory writable by group or others,
// owned by root or by the user running pgphi. It never searches PATH.
func repackBinary(ctx context.Context, r *Runner) (string, error) {
	var num int
	if err := r.Pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return "", err
	}
	var untrusted []string
	for _, dir := range repackDirs(num / 10000) {
		p := filepath.Join(dir, "pg_repack")
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := trustedExecutable(p); err != nil {
			untrusted = append(untrusted, err.Error())
			continue
		}
		return p, nil
	}
	if len(untrusted) > 0 {
		return "", fmt.Errorf("pg_repack found but not trusted: %s", strings.Join(untrusted, "; "))
	}
	return "", fmt.Errorf("pg_repack is not installed in %s: install the postgresql-%d-repack package", strings.Join(repackDirs(num/10000), ", "), num/10000)
}

// trustedExecutable refuses an executable that someone other than root or
// pgphi's user could have replaced.
func trustedExecutable(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o)", real, fi.Mode().Perm())
	}
	if !ownedByRootOrMe(fi) {
		return fmt.Errorf("%s is owned by another user", real)
	}
	di, err := os.Stat(filepath.Dir(real))
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if di.Mode().Perm()&0o022 != 0 && di.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("the directory of %s is writable by group or others", real)
	}
	return nil
}

// repackUsable says why pg_repack cannot run here, or nil: the TLS policy,
// the client binary, the extension (created when the server offers it and
// we may).
func (r *Runner) repackUsable(ctx context.Context) error {
	if _, err := r.repackTLSEnv(); err != nil {
		return err
	}
	if _, err := repackBinary(ctx, r); err != nil {
		return err
	}
	var installed, offered bool
	err := r.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_repack'),
		EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_repack')`).Scan(&installed, &offered)
	if err != nil {
		return err
	}
	if !installed && !offered {
		return errors.New("the server does not offer the pg_repack extension")
	}
	if !installed {
		if _, err := r.Pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_repack"); err != nil {
			return fmt.Errorf("the pg_repack extension cannot be created here (%v)", err)
		}
	}
	return nil
}

// tlsSettings is the database.tls section of the runner's config, if any.
func (r *Runner) tlsSettings() (config.TLS, func(string) string) {
	if r.Config == nil {
		return config.TLS{}, func(p string) string { return p }
	}
	return r.Config.Database.TLS, r.Config.Resolve
}

// repackTLSEnv returns the libpq variables that give pg_repack the TLS
// protection of pgphi's own connection.
func (r *Runner) repackTLSEnv() ([]string, error) {
	t, resolve := r.tlsSettings()
	pc := r.Pool.Config()
	return repackTLSEnv(&pc.ConnConfig.Config, pc.ConnString(), t, resolve)
}

// repackTLSEnv: pgphi's connection cc (parsed from connString) verifies the server as database.tls t
// and the connection string say; pg_repack (libpq) gets the same through
// PGSSLMODE, PGSSLROOTCERT, PGSSLCERT and PGSSLKEY: verify-full stays
// verify-full, with the same CA (or the system's roots, which libpq 16+
// spells sslrootcert=system, as Go's default does) and client certificate.
// A Unix socket needs none. Pins cannot be expressed to libpq: under a
// pin_sha256 policy over TCP it refuses.
func repackTLSEnv(cc *pgconn.Config, connString string, t config.TLS, resolve func(string) string) ([]string, error) {
	if strings.HasPrefix(cc.Host, "/") {
		return nil, nil
	}
	if len(t.PinSHA256) > 0 {
		return nil, errors.New("database.tls.pin_sha256 pins the server's key, and pg_repack (libpq) cannot check a pin")
	}
	mode := inferSSLMode(cc)
	if t.Mode != "" {
		mode = t.Mode
	}
	params := connStringParams(connString)
	pick := func(fromConfig, param, envName string) string {
		switch {
		case fromConfig != "":
			return resolve(fromConfig)
		case params[param] != "":
			return params[param]
		}
		return os.Getenv(envName) // read by pgconn as well when pgphi connected
	}
	ca := pick(t.CA, "sslrootcert", "PGSSLROOTCERT")
	cert := pick(t.Cert, "sslcert", "PGSSLCERT")
	key := pick(t.Key, "sslkey", "PGSSLKEY")
	if mode == "require" && ca != "" {
		mode = "verify-ca" // libpq: require with a root CA verifies the chain
	}
	env := []string{"PGSSLMODE=" + mode}
	if mode == "disable" {
		return env, nil
	}
	switch {
	case ca != "":
		abs, err := filepath.Abs(ca)
		if err != nil {
			return nil, err
		}
		env = append(env, "PGSSLROOTCERT="+abs)
	case mode == "verify-full":
		env = append(env, "PGSSLROOTCERT=system") // Go verified against the system's roots
	}
	for _, kv := range [][2]string{{"PGSSLCERT", cert}, {"PGSSLKEY", key}} {
		if kv[1] != "" {
			abs, err := filepath.Abs(kv[1])
			if err != nil {
				return nil, err
			}
			env = append(env, kv[0]+"="+abs)
		}
	}
	return env, nil
}

// inferSSLMode reads the libpq sslmode a parsed connection config implements.
func inferSSLMode(cc *pgconn.Config) string {
	tc := cc.TLSConfig
	var plain bool
	for _, fb := range cc.Fallbacks {
		if fb != nil && fb.Host == cc.Host && fb.Port == cc.Port {
			if fb.TLSConfig == nil {
				plain = true
			} else if tc == nil {
				tc = fb.TLSConfig
			}
		}
	}
	switch {
	case tc == nil:
		return "disable"
	case plain:
		return "prefer"
	}
	return tlsMode(tc)
}

func tlsMode(tc *tls.Config) string {
	switch {
	case !tc.InsecureSkipVerify:
		return "verify-full"
	case tc.VerifyPeerCertificate != nil:
		return "verify-ca"
	}
	return "require"
}

// connStringParams reads the ssl* parameters of a URL or key=value
// connection string.
func connStringParams(s string) map[string]string {
	out := map[string]string{}
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		if u, err := url.Parse(s); err == nil {
			for k, v := range u.Query() {
				if strings.HasPrefix(k, "ssl") && len(v) > 0 {
					out[k] = v[0]
				}
			}
		}
		return out
	}
	// key=value pairs; values may be single-quoted with \' and \\ escapes.
	for i := 0; i < len(s); {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			break
		}
		key := strings.TrimSpace(s[i : i+eq])
		i += eq + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			for i++; i < len(s) && s[i] != '\''; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
			i++
		} else {
			for ; i < len(s) && s[i] != ' '; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
		}
		if strings.HasPrefix(key, "ssl") {
			out[key] = val.String()
		}
	}
	return out
}

// repackCommand builds the pg_repack command for table t: the trusted
// binary bin, the connection as arguments (host, port, user, database: no
// password), and a minimal environment built from scratch (hooks.MinimalEnv,
// no PGPHI_*, PGPASSWORD or DATABASE_URL of pgphi's) with the TLS settings
// of repackTLSEnv and, when there is a password, PGPASSFILE naming a
// temporary password file of mode 0600. done removes that file.
func (r *Runner) repackCommand(ctx context.Context, bin string, t *Target) (cmd *exec.Cmd, done func(), err error) {
	tlsEnv, err := r.repackTLSEnv()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	cc := r.Pool.Config().ConnConfig
	env := hooks.MinimalEnv(tlsEnv...)
	done = func() {}
	if cc.Password != "" {
		if strings.ContainsAny(cc.Password, "\n\r") {
			return nil, nil, errors.New("the database password contains a line break: it cannot be given to pg_repack in a password file")
		}
		f, err := os.CreateTemp("", "pgphi-pgpass-*") // mode 0600
		if err != nil {
			return nil, nil, fmt.Errorf("creating pg_repack's password file: %w", err)
		}
		done = func() { os.Remove(f.Name()) }
		esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(cc.Password)
		_, werr := f.WriteString("*:*:*:*:" + esc + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Chmod(f.Name(), 0o600)
		}
		if werr != nil {
			done()
			return nil, nil, fmt.Errorf("writing pg_repack's password file: %w", werr)
		}
		env = append(env, "PGPASSFILE="+f.Name())
	}
	cmd = exec.CommandContext(ctx, bin, "--no-superuser-check", "-h", cc.Host, "-p", fmt.Sprint(cc.Port), "-U", cc.User, "-d", cc.Database, "-t", t.QualifiedName())
	cmd.Env = env
	return cmd, done, nil
}

func (r *Runner) runRepack(ctx context.Context, t *Target) error {
	bin, err := repackBinary(ctx, r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	for attempt := 1; ; attempt++ {
		cmd, done, err := r.repackCommand(ctx, bin, t)
		if err != nil {
			return err
		}
		out, err := cmd.CombinedOutput()
		done()
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
