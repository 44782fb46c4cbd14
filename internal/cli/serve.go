package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/serve"
)

func (a *app) serveCommand() *cobra.Command {
	var (
		listen, tlsCert, tlsKey, clientCA, sessionRole string
		conns, maxRows, burst                          int
		maxBody                                        int64
		rate                                           float64
		grace                                          time.Duration
		mopt                                           metricsOpt
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the application API (encrypt, decrypt, search) as JSON over HTTPS for applications in any language",
		Long: `serve answers POST /v1/encrypt, /v1/decrypt and /v1/search, GET /v1/columns,
/v1/flags and /healthz (docs/openapi.yaml). Clients authenticate with a bearer
token (pgphi serve token create) or a TLS client certificate registered with
--cert-cn; each acts as the database role it was registered with: decrypt and
search run as that role (SET LOCAL ROLE), need a reason and write one audit
record per request. Refusals are audited.

Log in as a NOINHERIT member of the roles the server acts as: its own
(--session-role, default the healthcare_admin group) and each client's.
HTTPS (--tls-cert, --tls-key) is required in production; elsewhere plain HTTP
is accepted on a loopback address or a Unix socket (--listen unix:/path).
Metrics are served on their own port with --metrics-addr. SIGTERM stops
accepting, lets requests finish and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := serve.CheckAddr(listen); err != nil {
				return withCode(ExitUsage, fmt.Errorf("usage: --listen: %w", err))
			}
			if (tlsCert == "") != (tlsKey == "") {
				return withCode(ExitUsage, errUsagef("--tls-cert and --tls-key go together"))
			}
			if clientCA != "" && tlsCert == "" {
				return withCode(ExitUsage, errUsagef("--tls-client-ca needs --tls-cert and --tls-key"))
			}
			var tlsConfig *tls.Config
			if tlsCert != "" {
				cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
				if err != nil {
					return withCode(ExitUsage, fmt.Errorf("usage: --tls-cert/--tls-key: %w", err))
				}
				tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
				if clientCA != "" {
					pem, err := os.ReadFile(clientCA)
					pool := x509.NewCertPool()
					if err != nil || !pool.AppendCertsFromPEM(pem) {
						return withCode(ExitUsage, errUsagef("--tls-client-ca: no PEM certificate in %s", clientCA))
					}
					// Certificates are optional: a client may use a token instead.
					tlsConfig.ClientCAs, tlsConfig.ClientAuth = pool, tls.VerifyClientCertIfGiven
				}
			}
			ctx := cmd.Context()
			m, stopMetrics, err := a.startMetrics(ctx, &mopt, "serve")
			if err != nil {
				return err
			}
			defer stopMetrics()
			w := a.wrapper()
			role := sessionRole
			w.Connect = func(ctx context.Context, cfg *config.Config, n int) (*pgxpool.Pool, error) {
				if role == "" {
					role = policy.DefaultRoleNames().Group(policy.HealthcareAdmin)
					if cfg != nil {
						if names, err := policy.ParseRoleNames(cfg.Access.Roles); err == nil {
							role = names.Group(policy.HealthcareAdmin)
						}
					}
				}
				pool, err := a.connectWith(ctx, cfg, n, dbconn.SessionRole(role))
				if err != nil && errors.Is(err, dbconn.ErrConnect) {
					return nil, fmt.Errorf("%w (serve's sessions act as %s: the login must be a member of it; `pgphi roles init` creates the groups, --session-role names another)", err, role)
				}
				return pool, err
			}
			spec := guardSpec{Command: "serve", NoPlan: true, OptionalConfig: true, Conns: conns}
			return w.Run(ctx, spec, "", func(ctx context.Context, s *session, out *outcome) error {
				ln, err := serve.Listen(listen, tlsConfig, s.Pins.Environment)
				switch {
				case errors.Is(err, serve.ErrPlainHTTP):
					return withCode(ExitRefused, err)
				case err != nil:
					return withCode(ExitUsage, err)
				}
				defer ln.Close()
				var clients bool
				if err := s.Pool.QueryRow(ctx, "SELECT to_regclass('pgphi.serve_clients') IS NOT NULL").Scan(&clients); err != nil {
					return err
				}
				if !clients {
					return withCode(ExitUsage, errors.New("pgphi's schema predates serve's clients table: run `pgphi serve token list` (or any command) as a dba once to upgrade it"))
				}
				if err := dbconn.DetectPooler(ctx, s.Pool); err != nil {
					if errors.Is(err, dbconn.ErrPooler) {
						return withCode(ExitRefused, err)
					}
					return err
				}
				kek, err := pgphi.KEKFromEnv()
				if err != nil {
					return withCode(ExitUsage, err)
				}
				client, err := pgphi.Open(ctx, s.Pool, kek, pgphi.Actor(s.Cfg.Actor))
				if err != nil {
					return err
				}
				defer client.Close()
				var mirror string
				if !s.NoConfig {
					mirror = s.Cfg.Resolve(s.Cfg.Audit.File)
				}
				alog, err := audit.Open(ctx, s.Pool, mirror)
				if err != nil {
					return err
				}
				cfg := serve.Config{Pool: s.Pool, Client: client, Log: alog, Names: s.Pins.Roles, AllowSuperuser: s.Pins.AllowSuperuser,
					Environment: s.Pins.Environment, MaxBody: maxBody, MaxRows: maxRows, Rate: rate, Burst: burst, Logf: a.logf}
				if m != nil {
					cfg.Metrics = m.Registry()
				}
				srv := serve.New(cfg)
				scheme := "http"
				if tlsConfig != nil {
					scheme = "https"
				}
				where := ln.Addr().String()
				if ln.Addr().Network() == "unix" {
					where = "unix:" + where
				} else {
					where = scheme + "://" + where
				}
				a.logf("serve: listening on %s (session role %s, environment %s)", where, role, s.Pins.Environment)
				if err := srv.Serve(ctx, ln, grace); err != nil {
					return err
				}
				a.logf("serve: stopped")
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8443", "HOST:PORT (HOST an IP address or localhost; port 0: any free port) or unix:/path")
	f.StringVar(&tlsCert, "tls-cert", "", "server certificate (PEM); with --tls-key, serve HTTPS")
	f.StringVar(&tlsKey, "tls-key", "", "server private key (PEM)")
	f.StringVar(&clientCA, "tls-client-ca", "", "CA certificates (PEM) that sign client certificates; a verified certificate's subject CN names a client registered with --cert-cn")
	f.StringVar(&sessionRole, "session-role", "", "the role the server's own sessions act as (default: the healthcare_admin group)")
	f.IntVar(&conns, "conns", 16, "database connections")
	f.Int64Var(&maxBody, "max-body", serve.DefaultMaxBody, "largest request body, in bytes (413 beyond)")
	f.IntVar(&maxRows, "max-rows", serve.DefaultMaxRows, "most rows in one request (413 beyond)")
	f.Float64Var(&rate, "rate", serve.DefaultRate, "requests per second per client, on average (429 beyond; 0: no limit)")
	f.IntVar(&burst, "burst", serve.DefaultBurst, "requests a client may make at once above --rate")
	f.DurationVar(&grace, "shutdown-grace", 15*time.Second, "how long requests in flight may take to finish at SIGTERM")
	f.StringVar(&mopt.addr, "metrics-addr", "", "serve Prometheus metrics at http://HOST:PORT/metrics, a port of its own (default off)")
	cmd.AddCommand(a.serveTokenCommand())
	return cmd
}

func (a *app) serveTokenCommand() *cobra.Command {
	tok := &cobra.Command{
		Use:   "token",
		Short: "Register, revoke and list the clients of pgphi serve",
		Args:  cobra.NoArgs,
	}
	var role, certCN string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE [--cert-cn CN]",
		Short: "Register a client acting as ROLE; prints its bearer token once (stored only as a hash)",
		Args:  wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(role) == "" {
				return withCode(ExitUsage, errUsagef("--role ROLE is required: the database role the client acts as"))
			}
			spec := guardSpec{Command: "serve token", NoPlan: true, OptionalConfig: true, Conns: 2}
			return a.guarded(cmd.Context(), spec, "", func(ctx context.Context, s *session, out *outcome) error {
				out.Details["client"], out.Details["client_role"], out.Details["action"] = args[0], role, "create"
				if certCN != "" {
					if err := serve.CreateCertificateClient(ctx, s.Pool, args[0], role, certCN); err != nil {
						return clientError(err)
					}
					a.logf("serve: client %s registered (certificate CN given), acting as %s", args[0], role)
					return nil
				}
				token, err := serve.CreateToken(ctx, s.Pool, args[0], role)
				if err != nil {
					return clientError(err)
				}
				fmt.Fprintln(a.stdout, token)
				a.logf("serve: client %s registered, acting as %s; the token above is shown once (only its hash is stored)", args[0], role)
				return nil
			})
		},
	}
	create.Flags().StringVar(&role, "role", "", "the database role the client acts as (required)")
	create.Flags().StringVar(&certCN, "cert-cn", "", "register a TLS client certificate subject CN instead of a token")
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a client: its token or certificate stops working at the next request",
		Args:  wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := guardSpec{Command: "serve token", NoPlan: true, OptionalConfig: true, Conns: 2}
			return a.guarded(cmd.Context(), spec, "", func(ctx context.Context, s *session, out *outcome) error {
				out.Details["client"], out.Details["action"] = args[0], "revoke"
				if err := serve.Revoke(ctx, s.Pool, args[0]); err != nil {
					return clientError(err)
				}
				a.logf("serve: client %s revoked", args[0])
				return nil
			})
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List clients (names, roles, who created and revoked them; never a token)",
		Args:  wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := guardSpec{Command: "serve token", NoPlan: true, OptionalConfig: true, Conns: 2}
			return a.guarded(cmd.Context(), spec, "", func(ctx context.Context, s *session, out *outcome) error {
				out.Details["action"] = "list"
				clients, err := serve.List(ctx, s.Pool)
				if err != nil {
					return err
				}
				if asJSON {
					if clients == nil {
						clients = []serve.ClientInfo{}
					}
					return json.NewEncoder(a.stdout).Encode(clients)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tAUTH\tCREATED\tBY\tREVOKED")
				for _, c := range clients {
					rev := "-"
					if c.RevokedAt != nil {
						rev = c.RevokedAt.UTC().Format(time.RFC3339) + " by " + c.RevokedBy
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Role, c.Auth, c.CreatedAt.UTC().Format(time.RFC3339), c.CreatedBy, rev)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	tok.AddCommand(create, revoke, list)
	return tok
}

// clientError maps a client registration error to its exit code.
func clientError(err error) error {
	switch {
	case errors.Is(err, serve.ErrClientName), errors.Is(err, serve.ErrNoClient), errors.Is(err, serve.ErrRole), errors.Is(err, serve.ErrClientExists):
		return withCode(ExitUsage, err)
	}
	return err
}
