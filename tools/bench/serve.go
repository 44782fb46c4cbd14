package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/dbconn"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/serve"
)

// serveResult compares one `pgphi serve` on loopback with the in-process
// Go API in the same run: values per second sealed (last_name: ciphertext
// and terms) in requests of 500 values, decrypted in requests of 500, and
// the latency of a one-value seal.
type serveResult struct {
	values, batch, clients int
	apiEnc, apiDec         float64 // values/s, in process
	srvEnc, srvDec         float64 // values/s, through serve
	apiOne, srvOne         []time.Duration
}

const (
	serveBatch   = 500
	serveClients = 4
	serveOne     = 2000
)

// serveBench measures serve against the Go API on the applied database of from.
func (e *env) serveBench(ctx context.Context, res *results, from *applyRun) (*serveResult, error) {
	values := min(e.o.patients, 50_000)
	values -= values % serveBatch
	out := &serveResult{values: values, batch: serveBatch, clients: serveClients}
	admin, err := dbconn.Open(ctx, e.cl.URL(from.db), serveClients+2)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	// serve's login: NOINHERIT, a member of the healthcare_admin group, which
	// is also the bench client's role.
	if _, err := policy.InitRoles(ctx, admin, policy.DefaultRoleNames()); err != nil {
		return nil, err
	}
	for _, q := range []string{
		`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_serve') THEN CREATE ROLE bench_serve LOGIN NOINHERIT; END IF; END $$`,
		"GRANT pgphi_healthcare_admin TO bench_serve",
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	token, err := serve.CreateToken(ctx, admin, fmt.Sprintf("bench-%d", time.Now().UnixNano()%1e9), "pgphi_healthcare_admin")
	if err != nil {
		return nil, err
	}
	// Ciphertexts to decrypt, from the table.
	rows, err := admin.Query(ctx, "SELECT uid, last_name_encrypted FROM public.patient ORDER BY uid LIMIT $1", values)
	if err != nil {
		return nil, err
	}
	type sealed struct {
		uid string
		ct  []byte
	}
	stored, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealed, error) {
		var s sealed
		return s, r.Scan(&s.uid, &s.ct)
	})
	if err != nil {
		return nil, err
	}
	values = min(values, len(stored)-len(stored)%serveBatch)
	out.values = values
	name := func(i int) string { return fmt.Sprintf("Benchname%07d", i) }

	// In process: the Go API on a pool like an application's.
	client, err := pgphi.Open(ctx, admin, pgphi.KeyFile(e.keyFile))
	if err != nil {
		return nil, err
	}
	defer client.Close()
	out.apiEnc, err = parallel(values, func(lo, hi int) error {
		in := make([]pgphi.Unsealed, 0, hi-lo)
		for i := lo; i < hi; i++ {
			in = append(in, pgphi.Unsealed{Key: pgphi.Key{"uid": stored[i].uid}, Value: name(i)})
		}
		_, err := client.SealAll(ctx, "patient", "last_name", in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("Go API seal: %w", err)
	}
	out.apiDec, err = parallel(values, func(lo, hi int) error {
		in := make([]pgphi.Sealed, 0, hi-lo)
		for i := lo; i < hi; i++ {
			in = append(in, pgphi.Sealed{Key: pgphi.Key{"uid": stored[i].uid}, Ciphertext: stored[i].ct})
		}
		_, err := client.DecryptAll(ctx, "patient", "last_name", "benchmark", in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("Go API decrypt: %w", err)
	}
	for i := range serveOne {
		t0 := time.Now()
		if _, err := client.Seal(ctx, "patient", "last_name", pgphi.Key{"uid": stored[i%values].uid}, name(i)); err != nil {
			return nil, err
		}
		out.apiOne = append(out.apiOne, time.Since(t0))
	}

	// One serve on loopback.
	dir := filepath.Join(e.dir, "serve")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	u, _ := url.Parse(e.cl.URL(from.db))
	u.User = url.User("bench_serve")
	cmd := exec.CommandContext(ctx, e.bin, "serve", "--listen", "127.0.0.1:0", "--rate", "0", "--conns", "16", "--database-url", u.String())
	cmd.Dir, cmd.Env = dir, e.pgphiEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	base := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`listening on (http://[0-9.:]+)`)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil && !sent {
				base <- m[1]
				sent = true
			} else if !sent {
				logf("serve: %s", sc.Text())
			}
		}
		if !sent {
			close(base)
		}
	}()
	var addr string
	select {
	case addr = <-base:
	case <-time.After(30 * time.Second):
	}
	if addr == "" {
		return nil, fmt.Errorf("pgphi serve did not start")
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: serveClients * 2}}
	post := func(path string, body any) error {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, "POST", addr+path, bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %d %s", path, resp.StatusCode, trimTo(string(b), 200))
		}
		return nil
	}
	type encRow struct {
		Key   map[string]string `json:"key"`
		Value string            `json:"value"`
	}
	type decRow struct {
		Key        map[string]string `json:"key"`
		Ciphertext string            `json:"ciphertext"`
	}
	out.srvEnc, err = parallel(values, func(lo, hi int) error {
		in := make([]encRow, 0, hi-lo)
		for i := lo; i < hi; i++ {
			in = append(in, encRow{Key: map[string]string{"uid": stored[i].uid}, Value: name(i)})
		}
		return post("/v1/encrypt", map[string]any{"table": "patient", "column": "last_name", "rows": in})
	})
	if err != nil {
		return nil, fmt.Errorf("serve encrypt: %w", err)
	}
	out.srvDec, err = parallel(values, func(lo, hi int) error {
		in := make([]decRow, 0, hi-lo)
		for i := lo; i < hi; i++ {
			in = append(in, decRow{Key: map[string]string{"uid": stored[i].uid}, Ciphertext: base64.StdEncoding.EncodeToString(stored[i].ct)})
		}
		return post("/v1/decrypt", map[string]any{"table": "patient", "column": "last_name", "reason": "benchmark", "rows": in})
	})
	if err != nil {
		return nil, fmt.Errorf("serve decrypt: %w", err)
	}
	for i := range serveOne {
		body := map[string]any{"table": "patient", "column": "last_name", "rows": []encRow{{Key: map[string]string{"uid": stored[i%values].uid}, Value: name(i)}}}
		t0 := time.Now()
		if err := post("/v1/encrypt", body); err != nil {
			return nil, err
		}
		out.srvOne = append(out.srvOne, time.Since(t0))
	}
	slices.Sort(out.apiOne)
	slices.Sort(out.srvOne)
	logf("serve: encrypt with terms %s values/s (Go API %s); decrypt %s values/s (Go API %s), batches of %d, %d clients; one-value encrypt p50 %s p99 %s (Go API p50 %s p99 %s)",
		fmtRate(out.srvEnc), fmtRate(out.apiEnc), fmtRate(out.srvDec), fmtRate(out.apiDec), serveBatch, serveClients,
		fmtDur(percentile(out.srvOne, 50)), fmtDur(percentile(out.srvOne, 99)), fmtDur(percentile(out.apiOne, 50)), fmtDur(percentile(out.apiOne, 99)))
	return out, nil
}

// parallel runs fn over [0, n) in batches of serveBatch on serveClients
// goroutines and returns the values per second.
func parallel(n int, fn func(lo, hi int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	t0 := time.Now()
	for range serveClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(serveBatch)) - serveBatch
				if lo >= n {
					return
				}
				if err := fn(lo, min(lo+serveBatch, n)); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
