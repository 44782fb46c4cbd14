package audit

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testKey returns a deterministic Ed25519 key.
func testKey(n byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = n
	return ed25519.NewKeyFromSeed(seed)
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func TestCheckpointSignature(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	if _, err := SignCheckpoint(ctx, pool, testKey(1)); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty log: %v", err)
	}
	appendN(t, openLog(t, pool, ""), 4)
	key := testKey(1)
	cp, err := SignCheckpoint(ctx, pool, key)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != 4 || len(cp.Hash) != 64 || cp.KeyFingerprint != Fingerprint(pubOf(key)) {
		t.Fatalf("checkpoint %+v", cp)
	}
	if err := VerifyCheckpoint(cp, pubOf(key)); err != nil {
		t.Fatal(err)
	}
	// The auditor's copy survives JSON.
	j, _ := json.Marshal(cp)
	var kept Checkpoint
	if err := json.Unmarshal(j, &kept); err != nil {
		t.Fatal(err)
	}
	if err := VerifyCheckpoint(&kept, pubOf(key)); err != nil {
		t.Fatalf("after JSON: %v", err)
	}
	if err := VerifyCheckpoint(cp, pubOf(testKey(2))); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("wrong key: %v", err)
	}
	// A forger with another key who also forges the fingerprint.
	forged := *cp
	forged.KeyFingerprint = Fingerprint(pubOf(testKey(2)))
	if err := VerifyCheckpoint(&forged, pubOf(testKey(2))); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("forged fingerprint: %v", err)
	}
	for name, edit := range map[string]func(c *Checkpoint){
		"seq":       func(c *Checkpoint) { c.Seq = 3 },
		"hash":      func(c *Checkpoint) { c.Hash = strings.Repeat("0", 64) },
		"time":      func(c *Checkpoint) { c.Time = c.Time.Add(time.Microsecond) },
		"signature": func(c *Checkpoint) { c.Signature = "AAAA" + c.Signature[4:] },
	} {
		c := *cp
		edit(&c)
		if err := VerifyCheckpoint(&c, pubOf(key)); !errors.Is(err, ErrBadCheckpoint) {
			t.Errorf("edited %s: %v", name, err)
		}
	}
	stored, err := Checkpoints(ctx, pool)
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored: %v %v", stored, err)
	}
	if err := VerifyCheckpoint(&stored[0], pubOf(key)); err != nil {
		t.Fatalf("stored copy: %v", err)
	}
}

// TestProveExtends: a checkpoint proves the log only grew; after an
// attacker rewrites records 3..N with consistently recomputed hashes (so the
// chain alone verifies), the checkpoint at seq 5 fails at seq 5 and the
// checkpoint at seq 2, from before the rewritten part, still holds.
func TestProveExtends(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	l := openLog(t, pool, "")
	key := testKey(1)
	appendN(t, l, 2)
	cp2, err := SignCheckpoint(ctx, pool, key)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 3)
	cp5, err := SignCheckpoint(ctx, pool, key)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 5)
	for _, cp := range []*Checkpoint{cp2, cp5} {
		if err := ProveExtends(ctx, pool, cp); err != nil {
			t.Fatalf("untouched log, checkpoint %d: %v", cp.Seq, err)
		}
	}
	// Consistent rewrite of 3..10.
	recs, err := List(ctx, pool, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	prev := recs[1].Hash
	for _, r := range recs[2:] {
		r.Reason = "nothing happened"
		r.Prev = prev
		prev = rewrite(t, pool, r).Hash
	}
	// The chain alone is consistent ...
	c := newChain(true)
	if err := scanTable(ctx, pool, 1, c); err != nil || !c.rep.OK() {
		t.Fatalf("rewritten chain: %+v %v", c.rep.Problems, err)
	}
	// ... the checkpoints are not.
	if err := ProveExtends(ctx, pool, cp2); err != nil {
		t.Fatalf("checkpoint 2 predates the rewrite: %v", err)
	}
	var p *Problem
	if err := ProveExtends(ctx, pool, cp5); !errors.As(err, &p) || p.Seq != 5 || p.Kind != KindCheckpointMismatch {
		t.Fatalf("checkpoint 5: %v", err)
	}
	rep, err := Verify(ctx, pool) // the stored copies of the checkpoints
	if err != nil {
		t.Fatal(err)
	}
	firstProblem(t, rep, 5, KindCheckpointMismatch)
	if _, err := SignCheckpoint(ctx, pool, key); err == nil {
		t.Fatal("signed a rewritten chain")
	}

	// A careless rewrite (hash recomputed, links not) fails at the rewritten record.
	_, pool2 := newDB(t)
	recs = appendN(t, openLog(t, pool2, ""), 6)
	cp, err := SignCheckpoint(ctx, pool2, key)
	if err != nil {
		t.Fatal(err)
	}
	r := recs[2]
	r.Reason = "nothing happened"
	rewrite(t, pool2, r)
	if err := ProveExtends(ctx, pool2, cp); !errors.As(err, &p) || p.Seq != 4 || p.Kind != KindBrokenLink {
		t.Fatalf("careless rewrite: %v", err)
	}
}

func TestArchive(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	recs := appendN(t, openLog(t, pool, ""), 10)
	dir := t.TempDir()
	if _, _, err := Archive(ctx, pool, dir, recs[0].Time); !errors.Is(err, ErrEmpty) {
		t.Fatalf("nothing before the first record: %v", err)
	}
	path, n, err := Archive(ctx, pool, dir, recs[6].Time) // records 1..6
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 || filepath.Base(path) != "pgphi-audit-000000000001-000000000006.jsonl.gz" {
		t.Fatalf("archive %s with %d records", path, n)
	}
	if err := VerifyArchive(path); err != nil {
		t.Fatal(err)
	}
	// The checksum file is sha256sum's format.
	data, _ := os.ReadFile(path)
	sum := sha256.Sum256(data)
	sumFile, _ := os.ReadFile(path + ".sha256")
	if string(sumFile) != hex.EncodeToString(sum[:])+"  "+filepath.Base(path)+"\n" {
		t.Fatalf("checksum file %q", sumFile)
	}
	// The content is the records' stored lines.
	zr, err := gzip.NewReader(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	i := 0
	for sc.Scan() {
		if sc.Text() != string(recs[i].CanonicalJSON()) {
			t.Fatalf("line %d differs", i+1)
		}
		i++
	}
	if i != 6 {
		t.Fatalf("%d lines", i)
	}
	// Nothing was deleted.
	mustVerify(t, pool, 10)
	// No temporary files are left.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("dir holds %d entries", len(entries))
	}

	// A flipped byte anywhere is detected.
	for _, off := range []int{0, len(data) / 2, len(data) - 1} {
		bad := append([]byte(nil), data...)
		bad[off] ^= 0x01
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := VerifyArchive(path); err == nil {
			t.Fatalf("flipped byte at %d not detected", off)
		}
	}
	// Even with a recomputed checksum, an edited record is caught by the chain.
	var lines []string
	for _, r := range recs[:6] {
		lines = append(lines, string(r.CanonicalJSON()))
	}
	lines[3] = strings.Replace(lines[3], "test reason 3", "test reason Z", 1)
	forged := filepath.Join(dir, "forged.jsonl.gz")
	f, _ := os.Create(forged)
	zw := gzip.NewWriter(f)
	zw.Write([]byte(strings.Join(lines, "\n") + "\n"))
	zw.Close()
	f.Close()
	fdata, _ := os.ReadFile(forged)
	fsum := sha256.Sum256(fdata)
	os.WriteFile(forged+".sha256", []byte(hex.EncodeToString(fsum[:])+"  forged.jsonl.gz\n"), 0o644)
	var p *Problem
	if err := VerifyArchive(forged); !errors.As(err, &p) || p.Seq != 4 || p.Kind != KindHashMismatch {
		t.Fatalf("forged archive: %v", err)
	}

	// Archiving everything.
	path, n, err = Archive(ctx, pool, dir, time.Now().Add(time.Hour))
	if err != nil || n != 10 || filepath.Base(path) != "pgphi-audit-000000000001-000000000010.jsonl.gz" {
		t.Fatalf("archive all: %s %d %v", path, n, err)
	}
	if err := VerifyArchive(path); err != nil {
		t.Fatal(err)
	}
}
