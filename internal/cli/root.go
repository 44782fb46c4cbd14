// Package cli is pgphi's command line: the commands and flags documented in
// README.md, the lookup of config and database, and the mapping of every
// failure to a documented exit code and a message free of values.
package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi/internal/backup"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/compliance"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/hooks"
	"github.com/pgphi/pgphi/internal/metrics"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/keys"
)

// Exit codes of the command-line contract.
const (
	ExitOK       = 0 // success
	ExitFailed   = 1 // the operation failed
	ExitUsage    = 2 // usage or configuration error
	ExitConnect  = 3 // cannot connect
	ExitRefused  = 4 // refused by policy (access, approval, TLS, validation)
	exitNotFound = ExitUsage
)

// exitError carries an exit code with a message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// ExitCode maps an error to the contract's exit codes.
func ExitCode(err error) int {
	var ee *exitError
	var ce *config.Error
	if code, ok := outermostCode(err); ok {
		return code
	}
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return ExitUsage
	case errors.Is(err, dbconn.ErrConnect):
		return ExitConnect
	case errors.Is(err, keys.ErrWrongKEK), errors.Is(err, keys.ErrNotInitialized), errors.Is(err, keys.ErrNoSuchKey), errors.Is(err, keys.ErrKEKKind):
		return ExitUsage
	case errors.Is(err, keys.ErrKeyInUse), errors.Is(err, keys.ErrActiveKey), errors.Is(err, keys.ErrUsageLimit):
		return ExitRefused
	case errors.Is(err, backup.ErrWrongKey):
		return ExitUsage
	case errors.Is(err, policy.ErrAccessDenied), errors.Is(err, policy.ErrApprovalRequired), errors.Is(err, policy.ErrApprovalRejected),
		errors.Is(err, policy.ErrPinsMismatch), errors.Is(err, policy.ErrPinsUnreadable),
		errors.Is(err, hooks.ErrHookFailed), errors.Is(err, engine.ErrRefused), errors.Is(err, dbconn.ErrTLSVerify), errors.Is(err, dbconn.ErrTLSPolicy):
		return ExitRefused
	}
	return ExitFailed
}

// outermostCode finds the outermost error in err's tree that carries an exit
// code: one of ours (withCode) or one the compliance wrapper marked as a
// refusal or a usage error.
func outermostCode(err error) (int, bool) {
	if err == nil {
		return 0, false
	}
	switch e := err.(type) {
	case *exitError:
		return e.code, true
	case interface{ Kind() error }:
		switch e.Kind() {
		case compliance.ErrRefused:
			return ExitRefused, true
		case compliance.ErrUsage:
			return ExitUsage, true
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return outermostCode(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, k := range u.Unwrap() {
			if code, ok := outermostCode(k); ok {
				return code, true
			}
		}
	}
	return 0, false
}

// app holds what every command shares: global flags and output streams.
type app struct {
	configFlag string
	dbFlag     string
	stdout     io.Writer
	stderr     io.Writer
	metrics    *metrics.Recorder // set by startMetrics when --metrics-addr is given
	metricsURL string            // where startMetrics serves them
	logFormat  string            // --log-format
	jsonLog    *slog.Logger      // set with --log-format json
}

// Main runs pgphi with args and returns the exit code. It never panics to
// the user: an unexpected panic is reported as an internal error without a stack.
func Main(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintln(stderr, "pgphi: internal error (please report it); no value is shown")
			code = ExitFailed
		}
	}()
	if path := os.Getenv("PGPHI_CPUPROFILE"); path != "" {
		// A development aid (go tool pprof): where a run spends its CPU.
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = withCode(ExitFailed, errors.New("interrupted; every committed batch is kept: run the same command again to resume"))
	}
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = withCode(ExitUsage, fmt.Errorf("usage: %w", err))
	}
	if err != nil {
		code = ExitCode(err)
		msg := redact.Error(err).Error()
		if ops := engine.NextSteps(err); len(ops) > 0 {
			msg += " (run " + engine.FormatOps(ops, func(op engine.Op) string { return "`pgphi " + string(op) + "`" }) + ")"
		} else if errors.Is(err, keys.ErrNotInitialized) {
			msg += " (run `pgphi keys init`)"
		}
		if a.jsonLog != nil {
			a.jsonLog.Error(msg, "exit_code", code)
			return code
		}
		fmt.Fprintf(stderr, "pgphi: %s\n", msg)
		if code == ExitUsage && isFlagError(err) {
			fmt.Fprintln(stderr, "run `pgphi --help` for usage")
		}
	}
	return code
}

func isFlagError(err error) bool {
	var ee *exitError
	return errors.As(err, &ee) && strings.HasPrefix(ee.err.Error(), "usage:")
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "pgphi",
		Short: "Encrypt PHI columns of a live PostgreSQL database, searchably and auditably",
		Long: `pgphi moves a live PostgreSQL database from plaintext PHI columns to encrypted,
still-searchable columns while the application keeps running.

Config: --config, else $PGPHI_CONFIG, else ./pgphi.yaml.
Database: --database-url, else database.url in the config, else $DATABASE_URL,
else the libpq PG* environment variables.
Keys: PGPHI_PASSPHRASE, PGPHI_PASSPHRASE_FILE (a 0600 file), PGPHI_PASSPHRASE_FD
(an open descriptor) or PGPHI_KEY_FILE: read once, removed from the
environment, never printed.

Exit codes: 0 success, 1 operation failed, 2 usage or configuration error,
3 cannot connect, 4 refused by policy.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.configFlag, "config", "", "config file (default $PGPHI_CONFIG, else ./pgphi.yaml)")
	root.PersistentFlags().StringVar(&a.dbFlag, "database-url", "", "database connection string (default database.url, $DATABASE_URL, PG* variables)")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "stderr as text lines, or json: one log/slog JSON record per event (progress, steps, alerts, errors), never a value")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return a.setLogFormat() }
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return withCode(ExitUsage, fmt.Errorf("usage: %w", err))
	})
	root.AddCommand(a.initCommand(), a.keysCommand(), a.planCommand(), a.applyCommand(),
		a.statusCommand(), a.verifyCommand(), a.searchCommand(), a.leakageCommand(), a.reindexCommand(), a.flagsCommand(), a.cleanupCommand(), a.rollbackCommand(), a.approveCommand(), a.pinsCommand(), a.rolesCommand(), a.auditCommand(), a.checkCommand(), a.reportCommand(), a.demoCommand(), a.serveCommand(), a.migrateCommand(), a.backupCommand())
	for _, c := range root.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return root
}

// wrapArgs makes argument-count errors usage errors (exit 2).
func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	if check == nil {
		check = cobra.NoArgs
	}
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return withCode(ExitUsage, fmt.Errorf("usage: %s: %w", cmd.CommandPath(), err))
		}
		return nil
	}
}

func (a *app) logf(format string, args ...any) {
	fmt.Fprintf(a.stderr, format+"\n", args...)
}

// session is a loaded config, an open pool and the resolved plan; inside
func (a *app) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(config.Locate(a.configFlag))
	if err == nil {
		keys.UseKEKDefaults(kekDefaults(cfg))
	}
	return cfg, err
}

// kekDefaults turns the config's `keys:` section into the defaults of the
// keys package; the PGPHI_* variables override them.
func kekDefaults(cfg *config.Config) keys.KEKDefaults {
	k := cfg.Keys
	d := keys.KEKDefaults{Kind: k.KEK, PINFile: cfg.Resolve(k.PinFile)}
	if k.KEK == keys.KindPKCS11 {
		id, _ := hex.DecodeString(strings.TrimPrefix(k.KeyID, "0x")) // validated by config
		d.PKCS11 = keys.PKCS11Config{Module: k.Module, TokenLabel: k.Token, TokenSerial: k.Serial, Slot: k.Slot,
			KeyLabel: k.KeyLabel, KeyID: id, Mechanism: k.Mechanism}
	}
	return d
}

func (a *app) connect(ctx context.Context, cfg *config.Config, maxConns int) (*pgxpool.Pool, error) {
	return a.connectWith(ctx, cfg, maxConns)
}

// connectWith is connect with options for the pool (serve's session role).
func (a *app) connectWith(ctx context.Context, cfg *config.Config, maxConns int, opts ...dbconn.Option) (*pgxpool.Pool, error) {
	if cfg == nil {
		connString, _ := dbconn.Resolve(a.dbFlag, "") // no config URL: nothing to expand
		return dbconn.Open(ctx, connString, maxConns, opts...)
	}
	connString, err := dbconn.Resolve(a.dbFlag, cfg.Database.URL)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("%s: %w", cfg.Path, err))
	}
	t := cfg.Database.TLS
	tc := dbconn.TLSConfig{Mode: t.Mode, CA: cfg.Resolve(t.CA), Cert: cfg.Resolve(t.Cert), Key: cfg.Resolve(t.Key), PinSHA256: t.PinSHA256}
	pool, err := dbconn.OpenWithTLS(ctx, connString, maxConns, tc, cfg.Environment, opts...)
	switch {
	case errors.Is(err, dbconn.ErrTLSVerify), errors.Is(err, dbconn.ErrTLSPolicy):
		return nil, withCode(ExitRefused, err)
	case errors.Is(err, dbconn.ErrTLSConfig):
		return nil, withCode(ExitUsage, err)
	}
	return pool, err
}

// resolvePlan reads the catalog and builds the session's plan.
func (a *app) resolvePlan(ctx context.Context, s *session) error {
	cfg, pool := s.Cfg, s.Pool
	cleaned, err := engine.LoadCleaned(ctx, pool)
	if err != nil {
		return err
	}
	tables, err := catalog.Resolve(ctx, pool, cfg, cleaned)
	if err != nil {
		return err
	}
	for _, t := range tables {
		names := []string{t.Schema, t.Name}
		for _, c := range t.Protected {
			names = append(names, c.Name, c.Name+cfg.Encryption.ColumnSuffix)
		}
		for _, k := range t.PrimaryKey {
			names = append(names, k.Name)
		}
		redact.AllowIdentifiers(names...)
	}
	if err := engine.CheckTableShapes(ctx, pool, cfg, tables); err != nil {
		return err
	}
	if s.Plan, err = engine.NewPlan(cfg, tables); err != nil {
		return err
	}
	return s.Plan.DiscoverDependencies(ctx, pool, cfg.Encryption.ColumnSuffix)
}

// runner loads the keys and returns the engine runner of a command that
// reports to m (nil: no metrics).
func (a *app) runner(ctx context.Context, s *session, m *metrics.Recorder) (*engine.Runner, error) {
	ring, err := loadKeys(ctx, s.Pool)
	if err != nil {
		return nil, err
	}
	observeRun(m, s.Plan, nil)
	return &engine.Runner{Pool: s.Pool, Keys: ring, Config: s.Cfg, Plan: s.Plan, Log: a.stderr, Metrics: engineMetrics(m)}, nil
}

func loadKeys(ctx context.Context, pool *pgxpool.Pool) (*keys.Keyring, error) {
	ring, err := compliance.LoadKeys(ctx, pool)
	if errors.Is(err, compliance.ErrKeySource) {
		return nil, withCode(ExitUsage, err)
	}
	return ring, err
}

// loadConfigOptional loads the config if one exists: commands that only need
// a database (keys) work without one.
func (a *app) loadConfigOptional() (*config.Config, error) {
	cfg, err := a.loadConfig()
	if errors.Is(err, config.ErrNotFound) && a.configFlag == "" && os.Getenv("PGPHI_CONFIG") == "" {
		return nil, nil
	}
	return cfg, err
}
