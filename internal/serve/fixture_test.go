package serve_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/serve"
	"github.com/pgphi/pgphi/internal/state"
	"github.com/pgphi/pgphi/keys"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The application's table: owned by the actors' application owner,
// written by its writer, protected by pgphi.
const patientDDL = `CREATE TABLE public.patient (uid text PRIMARY KEY, last_name text, phone text, date_of_birth date, visits int);
INSERT INTO public.patient VALUES ('P1', 'Smith', '+1 415 555 2671', '1980-02-29', 3), ('P2', 'Jones', NULL, '1991-07-01', NULL);`

const patientConfig = `version: 1
tables:
  patient:
    columns:
      last_name:     { class: pii, search: [exact, prefix, contains, phonetic] }
      phone:         { class: pii, search: [phone] }
      date_of_birth: { class: pii, search: [date] }
      visits:        { class: phi }
`

// fixture is an applied database, its actors, a serve login and a running
// server on loopback.
type fixture struct {
	url, keyFile string
	actors       *pgtest.Actors
	admin        *pgxpool.Pool // superuser, canonical sessions
	dba          *pgxpool.Pool // a dba login: registers clients
	writer       *pgxpool.Pool // the application's writer
	serveLogin   string
	base         string // http://127.0.0.1:PORT
	reg          *prometheus.Registry
	logs         *syncBuffer
	srvPool      *pgxpool.Pool
	stop         func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(&s.b, format+"\n", args...)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func q(s string) string { return pgx.Identifier{s}.Sanitize() }

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newFixture applies pgphi to the patient table, runs roles init, makes a
// NOINHERIT serve login and starts a server with opts applied to its config.
func newFixture(t *testing.T, opts ...func(*serve.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{url: pgtest.NewDatabase(t), logs: &syncBuffer{}}
	f.actors = pgtest.NewActors(t, f.url)
	var err error
	if f.admin, err = dbconn.Open(ctx, f.url, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.admin.Close)
	a := f.actors
	conn := pgtest.Connect(t, a.URL(a.AppOwner))
	if _, err := conn.Exec(ctx, patientDDL); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "GRANT SELECT, INSERT, UPDATE ON public.patient TO "+q(a.AppWriter)); err != nil {
		t.Fatal(err)
	}
	f.keyFile = filepath.Join(t.TempDir(), "pgphi.key")
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(f.keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := f.admin.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = state.Ensure(ctx, c)
	c.Release()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Init(ctx, f.admin, keys.KeyFileProvider(f.keyFile)); err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(ctx, f.admin, keys.KeyFileProvider(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("pgphi.yaml", []byte(patientConfig))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := catalog.Resolve(ctx, f.admin, cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := engine.NewPlan(cfg, tables)
	if err != nil {
		t.Fatal(err)
	}
	r := &engine.Runner{Pool: f.admin, Keys: ring, Config: cfg, Plan: plan, Log: io.Discard}
	if err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.InitRoles(ctx, f.admin, policy.DefaultRoleNames()); err != nil {
		t.Fatal(err)
	}
	// serve's login: NOINHERIT, so it has no rights but those of the role it
	// sets; a member of its own session role and of each client's role.
	f.serveLogin = "serve_" + strings.TrimPrefix(a.DBA, "dba_")
	mustExec(t, f.admin, "CREATE ROLE "+q(f.serveLogin)+" LOGIN NOINHERIT")
	t.Cleanup(func() {
		p, err := pgxpool.New(context.Background(), f.url)
		if err == nil {
			p.Exec(context.Background(), "DROP OWNED BY "+q(f.serveLogin))
			p.Close()
		}
		// the role is cluster-wide; dropped after the database is
		adm, err := pgx.Connect(context.Background(), strings.Replace(f.url, "/"+dbName(f.url), "/postgres", 1))
		if err == nil {
			adm.Exec(context.Background(), "DROP ROLE IF EXISTS "+q(f.serveLogin))
			adm.Close(context.Background())
		}
	})
	mustExec(t, f.admin, "GRANT CONNECT ON DATABASE "+q(dbName(f.url))+" TO "+q(f.serveLogin))
	mustExec(t, f.admin, "GRANT "+pgtest.GroupHealthcareAdmin+", "+q(a.HealthcareAdmin)+", "+q(a.DBA)+", "+q(a.AuditOfficer)+", "+q(a.AppWriter)+" TO "+q(f.serveLogin))
	if f.dba, err = dbconn.Open(ctx, a.URL(a.DBA), 2); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.dba.Close)
	if f.writer, err = pgxpool.New(ctx, a.URL(a.AppWriter)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.writer.Close)
	f.start(t, opts...)
	return f
}

func dbName(url string) string {
	i := strings.LastIndex(url, "/")
	name := url[i+1:]
	if j := strings.IndexByte(name, '?'); j >= 0 {
		name = name[:j]
	}
	return name
}

// start runs a server as the serve login, as `pgphi serve` sets it up.
func (f *fixture) start(t *testing.T, opts ...func(*serve.Config)) {
	t.Helper()
	ctx := context.Background()
	pool, err := dbconn.Open(ctx, f.actors.URL(f.serveLogin), 8, dbconn.SessionRole(pgtest.GroupHealthcareAdmin))
	if err != nil {
		t.Fatal(err)
	}
	f.srvPool = pool
	if err := dbconn.DetectPooler(ctx, pool); err != nil {
		t.Fatal(err)
	}
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(ctx, pool, "")
	if err != nil {
		t.Fatal(err)
	}
	f.reg = prometheus.NewRegistry()
	cfg := serve.Config{Pool: pool, Client: client, Log: alog, Names: policy.DefaultRoleNames(), Environment: "development",
		Rate: 1000, Burst: 1000, Metrics: f.reg, Logf: f.logs.Logf}
	for _, o := range opts {
		o(&cfg)
	}
	srv := serve.New(cfg)
	ln, err := serve.Listen("127.0.0.1:0", nil, "development")
	if err != nil {
		t.Fatal(err)
	}
	f.base = "http://" + ln.Addr().String()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln, 5*time.Second) }()
	f.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		client.Close()
		pool.Close()
	}
	t.Cleanup(func() {
		if f.stop != nil {
			f.stop()
			f.stop = nil
		}
	})
}

// token registers a client acting as role and returns its token.
func (f *fixture) token(t *testing.T, name, role string) string {
	t.Helper()
	tok, err := serve.CreateToken(context.Background(), f.dba, name, role)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call makes a request and decodes the JSON answer.
func (f *fixture) call(t *testing.T, method, path, token string, body any) (int, map[string]any, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, f.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %v", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, out, raw
}

// auditRecords returns the records after seq.
func (f *fixture) auditRecords(t *testing.T, after int64) []audit.Record {
	t.Helper()
	rows, err := f.admin.Query(context.Background(), "SELECT record::text FROM pgphi.audit_log WHERE seq > $1 ORDER BY seq", after)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	for _, s := range texts {
		r, err := audit.ParseRecord([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func (f *fixture) auditHead(t *testing.T) int64 {
	t.Helper()
	var seq int64
	if err := f.admin.QueryRow(context.Background(), "SELECT COALESCE(max(seq), 0) FROM pgphi.audit_log").Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// verify runs pgphi's own verification of the table (as `pgphi verify`).
func verify(ctx context.Context, f *fixture) (bool, error) {
	ring, err := keys.Load(ctx, f.admin, keys.KeyFileProvider(f.keyFile))
	if err != nil {
		return false, err
	}
	cfg, err := config.Parse("pgphi.yaml", []byte(patientConfig))
	if err != nil {
		return false, err
	}
	tables, err := catalog.Resolve(ctx, f.admin, cfg)
	if err != nil {
		return false, err
	}
	plan, err := engine.NewPlan(cfg, tables)
	if err != nil {
		return false, err
	}
	res, err := engine.Verify(ctx, f.admin, ring, plan, 0)
	if err != nil {
		return false, err
	}
	return res.OK(), nil
}
