package pgphi_test

import (
	"context"
	"testing"

	"github.com/pgphi/pgphi"
)

// The API counts its encryptions against the data key's limit in blocks,
// ahead of sealing: the count is never below what it sealed, and a block
// costs one round trip, not one per value.
func TestSealCountsEncryptionsInBlocks(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	var before int64
	if err := f.pool.QueryRow(ctx, "SELECT COALESCE((SELECT encryptions FROM pgphi.key_usage WHERE key_id = 1), 0)").Scan(&before); err != nil {
		t.Fatal(err)
	}
	client, err := pgphi.Open(ctx, appPool(t, f.url), pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := client.Seal(ctx, "patient", "last_name", pgphi.Key{"uid": "U" + string(rune('0'+i))}, "Smith"); err != nil {
			t.Fatal(err)
		}
	}
	var after int64
	if err := f.pool.QueryRow(ctx, "SELECT encryptions FROM pgphi.key_usage WHERE key_id = 1").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after-before != 1024 {
		t.Fatalf("three seals counted %d encryptions, want one block of 1024", after-before)
	}
	// At the limit, sealing is refused.
	if _, err := f.pool.Exec(ctx, "UPDATE pgphi.key_usage SET encryptions = 4294967000 WHERE key_id = 1"); err != nil {
		t.Fatal(err)
	}
	fresh, err := pgphi.Open(ctx, appPool(t, f.url), pgphi.KeyFile(f.keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Seal(ctx, "patient", "last_name", pgphi.Key{"uid": "U9"}, "Smith"); err == nil {
		t.Fatal("sealing past 2^32 encryptions under one key was allowed")
	}
}
