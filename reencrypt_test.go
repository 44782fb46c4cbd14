package pgphi_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/internal/engine"
	"github.com/pgphi/pgphi/keys"
)

// After a rotation, re-encryption moves every ciphertext to the active
// data key, online: interrupted half-way and resumed, a ciphertext the
// application wrote meanwhile with a client opened before the rotation is
// swept too; afterwards no ciphertext names the old key, every value
// decrypts to what it was, verify passes and search is unchanged.
func TestReencryptAfterRotation(t *testing.T) {
	ctx := context.Background()
	f := reindexFixture(t)
	pool := appPool(t, f.url)
	old, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	before := answers(t, old)
	oldID := f.ring.ActiveKeyID()
	newID, err := keys.Rotate(ctx, f.pool, keys.KeyFileProvider(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if f.ring, err = keys.Load(ctx, f.pool, keys.KeyFileProvider(f.keyFile)); err != nil {
		t.Fatal(err)
	}
	stale := func() int {
		var n int
		f.pool.QueryRow(ctx, `SELECT count(*) FROM public.patient WHERE substr(last_name_encrypted, 2, 4) <> $1 OR substr(visits_encrypted, 2, 4) <> $1`,
			binary.BigEndian.AppendUint32(nil, newID)).Scan(&n)
		return n
	}
	if n := stale(); n < 600 {
		t.Fatalf("%d rows under the old key before", n)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard, Throttle: &engine.Throttle{MaxRate: 500}}
	done := make(chan error, 1)
	go func() {
		_, err := r.Reencrypt(rctx)
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var d int64
		f.pool.QueryRow(ctx, `SELECT COALESCE(sum(rows_done), 0) FROM pgphi.chunks WHERE table_name LIKE '%#reencrypt:%'`).Scan(&d)
		if d >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the re-encryption did not progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted: %v", err)
	}
	if in, err := engine.ReencryptInProgress(ctx, f.pool, newID); err != nil || !in {
		t.Fatalf("in progress after the interruption: %v %v", in, err)
	}
	if n := stale(); n == 0 || n >= 600 {
		t.Fatalf("%d rows under the old key after the interruption", n)
	}
	// After cutover, a client opened before the rotation still seals with
	// the old key.
	if err := engine.SetFlag(ctx, f.pool, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	a, err := old.Row(ctx, "patient", pgphi.Key{"uid": "P5"}, map[string]any{"visits": 41})
	if err != nil {
		t.Fatal(err)
	}
	if err := write(ctx, pool, "P5", a, true); err != nil {
		t.Fatal(err)
	}
	r = &engine.Runner{Pool: f.pool, Keys: f.ring, Config: f.cfg, Plan: f.plan, Log: io.Discard}
	res, err := r.Reencrypt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].KeyID != newID || res[0].Reencrypted == 0 {
		t.Fatalf("re-encryption: %+v", res)
	}
	if n := stale(); n != 0 {
		t.Fatalf("%d rows still under key %d", n, oldID)
	}
	if in, _ := engine.ReencryptInProgress(ctx, f.pool, newID); in {
		t.Fatal("still in progress after the run")
	}
	v, err := engine.Verify(ctx, f.pool, f.ring, f.plan, 0)
	if err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
	client, err := pgphi.Open(ctx, pool, pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	sameAnswers(t, "after re-encryption", before, answers(t, client))
	for col, want := range map[string]string{"visits": "41", "last_name": "Kim"} {
		var ct []byte
		f.pool.QueryRow(ctx, `SELECT `+col+`_encrypted FROM public.patient WHERE uid = 'P5'`).Scan(&ct)
		got, _, err := client.Decrypt(ctx, "patient", col, pgphi.Key{"uid": "P5"}, ct, "test")
		if err != nil || got != want {
			t.Fatalf("P5 %s decrypts to %q (%v), want %q", col, got, err, want)
		}
	}
}
