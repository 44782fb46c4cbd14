package serve_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/catalog"
	"github.com/pgphi/pgphi/internal/config"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/keys"
)

// While a reindex builds last_name's next generation, /v1/encrypt's
// assignments name both term columns; the terms of both are decimal strings.
func TestEncryptAssignsBothGenerationsDuringReindex(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
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
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A rate of one row a second holds the reindex in its first batch.
	r := &engine.Runner{Pool: f.admin, Keys: ring, Config: cfg, Plan: plan, Log: io.Discard, Throttle: &engine.Throttle{MaxRate: 1}}
	done := make(chan error, 1)
	go func() {
		_, err := r.Reindex(rctx, engine.ReindexOptions{Table: "patient", Column: "last_name", Resize: true})
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		f.admin.QueryRow(ctx, `SELECT count(*) FROM pgphi.blind_indexes WHERE state = 'building'`).Scan(&n)
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reindex did not begin")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	app := f.token(t, "app", f.actors.AppWriter)
	a := f.encryptRow(t, app, "P10", map[string]any{"last_name": "Okafor"})["last_name"]
	for _, col := range []string{"last_name_encrypted", "last_name_bidx", "last_name_bidx_next"} {
		if _, ok := a[col]; !ok {
			t.Fatalf("assignments during a reindex: %v, no %s", a, col)
		}
	}
	next, ok := a["last_name_bidx_next"].([]any)
	if !ok || len(next) == 0 {
		t.Fatalf("next generation's terms: %v", a["last_name_bidx_next"])
	}
	for _, x := range next {
		if _, ok := x.(string); !ok {
			t.Fatalf("a term that is not a decimal string: %v", x)
		}
	}
}
