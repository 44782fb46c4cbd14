package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
)

// grantAudit grants the pgphi groups what `roles init` grants them for the
// audit trail (policy/functions.go): reading, and EXECUTE on the append and
// checkpoint functions. No INSERT.
func grantAudit(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, s := range []string{
		"GRANT USAGE ON SCHEMA pgphi TO pgphi_dba, pgphi_healthcare_admin, pgphi_audit_officer",
		"GRANT SELECT ON pgphi.audit_log TO pgphi_dba, pgphi_healthcare_admin, pgphi_audit_officer",
		"GRANT SELECT ON pgphi.audit_checkpoints TO pgphi_dba, pgphi_audit_officer",
		"GRANT EXECUTE ON FUNCTION pgphi.audit_append(jsonb) TO pgphi_dba, pgphi_healthcare_admin, pgphi_audit_officer",
		"GRANT EXECUTE ON FUNCTION pgphi.audit_checkpoint_record(bigint, text, timestamptz, text, text) TO pgphi_dba, pgphi_audit_officer",
	} {
		if _, err := pool.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func wantSQLState(t *testing.T, what string, err error, code string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("%s: %v; want SQLSTATE %s", what, err, code)
	}
}

// TestJCSStringsSQLEqualsGo: PostgreSQL's to_json(text)::text escapes
// strings exactly as RFC 8785 (and appendString) does, over every ASCII
// character, quotes, backslashes, non-ASCII and line/paragraph separators.
func TestJCSStringsSQLEqualsGo(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	var cases []string
	for c := rune(1); c < 0x80; c++ {
		cases = append(cases, string(c), "a"+string(c)+"b")
	}
	cases = append(cases, "", `"`, `\`, `\"`, `"\\"`, "\u2028", "\u2029", "\u00e9", "Ren\u00e9e", "\u0085", "\u00a0",
		"\ufeff", "\ufffd", "\U0001F600", "\U0010FFFF", "\u200b", "e\u0301", "</script>", "&<>", "\x7f",
		`{"a":1}`, "\\u0000", "tab\there\r\nnew", strings.Repeat("\u00e9\x01\"", 100))
	for _, s := range cases {
		var got string
		if err := pool.QueryRow(ctx, "SELECT pg_catalog.to_json($1::text)::text", s).Scan(&got); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if want := string(appendString(nil, s)); got != want {
			t.Errorf("to_json(%q) = %s; JCS wants %s", s, got, want)
		}
	}
}

// nasty returns a random string of awkward characters.
func nasty(rng *rand.Rand, max int) string {
	pool := []rune{'"', '\\', '/', '\b', '\f', '\n', '\r', '\t', 0x01, 0x1f, 0x7f, 0x80, 0xa0, 0xe9, 0x2028, 0x2029,
		0xfeff, 0xfffd, 0x1F600, 0x10FFFF, 'a', 'Z', '0', ' ', '{', '}', '[', ']', ',', ':', '<', '>', '&', '\'', 0x0301, 0x4e2d}
	n := rng.Intn(max + 1)
	var b strings.Builder
	for i := 0; i < n; i++ {
		if rng.Intn(8) == 0 {
			r := rune(rng.Intn(0x10FFFF-1) + 1)
			if utf8.ValidRune(r) {
				b.WriteRune(r)
				continue
			}
		}
		b.WriteRune(pool[rng.Intn(len(pool))])
	}
	return b.String()
}

func nastyRecord(rng *rand.Rand) Record {
	events := []string{EventStart, EventSuccess, EventFailure, EventRefused}
	list := func() []string {
		var l []string
		for i := rng.Intn(4); i > 0; i-- {
			l = append(l, nasty(rng, 12))
		}
		return l
	}
	d := map[string]string{}
	for i := rng.Intn(4); i > 0; i-- {
		keys := []string{"a", "z9", "approvals", "x.y-z_1", "b", "a0", "a-", "a.", strings.Repeat("k", 64)}
		d[keys[rng.Intn(len(keys))]] = nasty(rng, 20)
	}
	nums := []int64{0, 1, -1, 42, maxSafeInt, -maxSafeInt, 1 << 40}
	return Record{
		Event: events[rng.Intn(len(events))], Command: "c" + nasty(rng, 10), RunID: nasty(rng, 10), PlanID: nasty(rng, 10),
		Actor:       Actor{OSUser: nasty(rng, 8), Name: nasty(rng, 20), Host: nasty(rng, 8), DBRole: "forged-role"},
		Environment: nasty(rng, 8), DBHost: nasty(rng, 8), DBName: "forged-db", Reason: nasty(rng, 60),
		Tables: list(), Columns: list(), Rows: nums[rng.Intn(len(nums))], DurationMS: nums[rng.Intn(len(nums))],
		ErrorClass: nasty(rng, 10), Details: d,
	}
}

// TestAppendNastyRecordsSQLHashEqualsGo appends hundreds of records with
// random awkward contents through pgphi.audit_append: every hash the
// database computed equals Go's (Append refuses otherwise), the chain
// verifies in Go, and the mirror equals the table.
func TestAppendNastyRecordsSQLHashEqualsGo(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, pool, mirror)
	rng := rand.New(rand.NewSource(20261207))
	const n = 300
	for i := 0; i < n; i++ {
		in := nastyRecord(rng)
		r, err := l.Append(ctx, in)
		if err != nil {
			t.Fatalf("record %d: %v", i+1, err)
		}
		if r.Seq != int64(i+1) || r.Hash != r.ComputeHash() || r.Actor.DBRole == "forged-role" || r.DBName == "forged-db" {
			t.Fatalf("record %d stored as seq %d, role %q, db %q", i+1, r.Seq, r.Actor.DBRole, r.DBName)
		}
		if in.Reason != r.Reason || in.Actor.Name != r.Actor.Name || len(in.Details) != len(r.Details) {
			t.Fatalf("record %d: chosen fields changed", i+1)
		}
	}
	// Every stored row: hash column = Go's hash of the stored record.
	rows, err := pool.Query(ctx, "SELECT seq, hash, record::text FROM pgphi.audit_log ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var (
			seq        int64
			hash, text string
		)
		if err := rows.Scan(&seq, &hash, &text); err != nil {
			t.Fatal(err)
		}
		rec, err := ParseRecord([]byte(text))
		if err != nil || rec.ComputeHash() != hash {
			t.Fatalf("seq %d: SQL hash differs from Go's (%v)", seq, err)
		}
	}
	rows.Close()
	mustVerify(t, pool, n)
	mustVerifyFile(t, mirror, n)
	if p, err := CompareFileAndTable(ctx, pool, mirror); err != nil || p != nil {
		t.Fatalf("compare: %+v %v", p, err)
	}
	// The encoding check: a hash the database computed that Go does not
	// reproduce is refused before commit.
	if _, err := checkStored(`{"actor":{"db_role":"r","host":"","name":"","os_user":""},"columns":[],"command":"x","db_host":"","db_name":"d","details":{},"duration_ms":0,"environment":"","error_class":"","event":"start","hash":"`+ZeroHash+`","plan_id":"","prev":"`+ZeroHash+`","reason":"","rows":0,"run_id":"","seq":1,"tables":[],"time":"2025-01-01T00:00:00.000000Z"}`,
		Record{Event: "start", Command: "x"}); !errors.Is(err, ErrEncoding) {
		t.Fatalf("mismatched hash: %v", err)
	}
}

// TestAttackDirectInsert: healthcare_admin and audit_officer members may not
// INSERT into the audit tables (a forged, correctly chained record claiming
// "pgphi_dba, success" was the attack).
func TestAttackDirectInsert(t *testing.T) {
	ctx := context.Background()
	url, pool := newDB(t)
	a := pgtest.NewActors(t, url)
	grantAudit(t, pool)
	l := openLog(t, pool, "")
	recs := appendN(t, l, 2)
	forged := Record{Seq: 3, Time: time.Now().UTC().Truncate(time.Microsecond), Event: EventSuccess, Command: "apply",
		Actor: Actor{DBRole: "pgphi_dba"}, DBName: "x", Prev: recs[1].Hash, Tables: []string{}, Columns: []string{}, Details: map[string]string{}}
	forged.Hash = forged.ComputeHash()
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer, a.AppOwner, a.AppWriter, a.Outsider} {
		c := a.Connect(t, role)
		_, err := c.Exec(ctx, "INSERT INTO pgphi.audit_log (seq, recorded_at, record, hash, prev) VALUES ($1, $2, $3::jsonb, $4, $5)",
			forged.Seq, forged.Time, string(forged.CanonicalJSON()), forged.Hash, forged.Prev)
		wantSQLState(t, role+": INSERT INTO audit_log", err, "42501")
		_, err = c.Exec(ctx, "INSERT INTO pgphi.audit_checkpoints VALUES (2, $1, now(), 'SHA256:x', 'x')", recs[1].Hash)
		wantSQLState(t, role+": INSERT INTO audit_checkpoints", err, "42501")
		// Nor through SET ROLE to the group.
		if role == a.HealthcareAdmin || role == a.AuditOfficer {
			g := pgtest.GroupHealthcareAdmin
			if role == a.AuditOfficer {
				g = pgtest.GroupAuditOfficer
			}
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+g); err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(ctx, "INSERT INTO pgphi.audit_log (seq, recorded_at, record, hash, prev) VALUES ($1, $2, $3::jsonb, $4, $5)",
				forged.Seq, forged.Time, string(forged.CanonicalJSON()), forged.Hash, forged.Prev)
			wantSQLState(t, g+": INSERT INTO audit_log", err, "42501")
			tx.Rollback(ctx)
		}
	}
	mustVerify(t, pool, 2)
}

// TestAttackForgedFieldsInAppend: the fields the database assigns cannot be
// chosen through pgphi.audit_append, and the stored db_role is the caller.
func TestAttackForgedFieldsInAppend(t *testing.T) {
	ctx := context.Background()
	url, pool := newDB(t)
	a := pgtest.NewActors(t, url)
	grantAudit(t, pool)
	appendN(t, openLog(t, pool, ""), 1)
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer} {
		c := a.Connect(t, role)
		for _, p := range []string{
			`{"event":"success","command":"apply","seq":2}`,
			`{"event":"success","command":"apply","prev":"0000000000000000000000000000000000000000000000000000000000000000"}`,
			`{"event":"success","command":"apply","time":"2020-01-01T00:00:00.000000Z"}`,
			`{"event":"success","command":"apply","hash":"00"}`,
			`{"event":"success","command":"apply","db_name":"other"}`,
			`{"event":"success","command":"apply","actor":{"db_role":"pgphi_dba"}}`,
		} {
			var out string
			err := c.QueryRow(ctx, "SELECT pgphi.audit_append($1::jsonb)::text", p).Scan(&out)
			wantSQLState(t, role+": "+p, err, "42501")
		}
		for _, p := range []string{
			`{"event":"success","command":"apply","ssn":"1"}`,
			`{"event":"success","command":"apply","actor":{"role":"x"}}`,
			`{"event":"hacked","command":"apply"}`,
			`{"event":"start","command":""}`,
			`{"event":"start","command":"apply","rows":1.5}`,
			`{"event":"start","command":"apply","rows":9007199254740992}`,
			`{"event":"start","command":"apply","rows":"1"}`,
			`{"event":"start","command":"apply","tables":[1]}`,
			`{"event":"start","command":"apply","tables":"t"}`,
			`{"event":"start","command":"apply","details":{"Bad":"x"}}`,
			`{"event":"start","command":"apply","details":{"a":1}}`,
			`{"event":"start","command":"apply","reason":1}`,
			`["start"]`,
		} {
			var out string
			err := c.QueryRow(ctx, "SELECT pgphi.audit_append($1::jsonb)::text", p).Scan(&out)
			wantSQLState(t, role+": "+p, err, "22023")
		}
		big := `{"event":"start","command":"apply","reason":"` + strings.Repeat("x", MaxRecordSize) + `"}`
		var out string
		wantSQLState(t, "oversized", c.QueryRow(ctx, "SELECT pgphi.audit_append($1::jsonb)::text", big).Scan(&out), "22023")
	}
	// The stored db_role is the real caller: the login role, or the group
	// it SET ROLE to.
	for _, tc := range []struct{ login, setRole string }{
		{a.HealthcareAdmin, ""}, {a.AuditOfficer, ""}, {a.DBA, ""}, {a.HealthcareAdmin, pgtest.GroupHealthcareAdmin},
	} {
		c := a.Connect(t, tc.login)
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tc.setRole != "" {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+tc.setRole); err != nil {
				t.Fatal(err)
			}
		}
		var text string
		if err := tx.QueryRow(ctx, "SELECT pgphi.audit_append($1::jsonb)::text", `{"event":"success","command":"apply","actor":{"name":"pgphi_dba"}}`).Scan(&text); err != nil {
			t.Fatalf("%s: %v", tc.login, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		rec, err := ParseRecord([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		want := tc.login
		if tc.setRole != "" {
			want = tc.setRole
		}
		if rec.Actor.DBRole != want || rec.Hash != rec.ComputeHash() {
			t.Fatalf("stored db_role %q, want %q", rec.Actor.DBRole, want)
		}
	}
	mustVerify(t, pool, 5)
	// Through Log.Append as a healthcare_admin member, the same.
	hp := openPool(t, a.URL(a.HealthcareAdmin))
	in := sample(0)
	in.Actor.DBRole = "pgphi_dba"
	r, err := openLog(t, hp, "").Append(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Actor.DBRole != a.HealthcareAdmin {
		t.Fatalf("Log.Append stored db_role %q", r.Actor.DBRole)
	}
	mustVerify(t, pool, 6)
}

// TestAttackOutsiderRefusal: a role in no pgphi group can have its refusal
// recorded (as itself, nothing else chosen) and cannot append anything else.
func TestAttackOutsiderRefusal(t *testing.T) {
	ctx := context.Background()
	url, pool := newDB(t)
	a := pgtest.NewActors(t, url)
	grantAudit(t, pool)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, pool, mirror)
	appendN(t, l, 1)
	for _, role := range []string{a.Outsider, a.AppWriter} {
		c := a.Connect(t, role)
		var out string
		err := c.QueryRow(ctx, "SELECT pgphi.audit_append($1::jsonb)::text", `{"event":"success","command":"apply"}`).Scan(&out)
		wantSQLState(t, role+": audit_append", err, "42501")
		if err := AppendRefusal(ctx, c, "apply"); err != nil {
			t.Fatalf("%s: refusal: %v", role, err)
		}
		if err := AppendRefusal(ctx, c, "apply\", \"event\": \"success"); err != nil {
			t.Fatalf("%s: refusal: %v", role, err)
		}
		// The internal writer is not callable.
		_, err = c.Exec(ctx, "SELECT pgphi.audit_write('success','apply','','','','','','','','',ARRAY[]::text[],ARRAY[]::text[],0,0,'','{}')")
		wantSQLState(t, role+": audit_write", err, "42501")
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := List(ctx, pool, 2, 0)
	if err != nil || len(recs) != 4 {
		t.Fatalf("records: %d %v", len(recs), err)
	}
	for i, r := range recs {
		wantRole, wantCmd := a.Outsider, "apply"
		if i >= 2 {
			wantRole = a.AppWriter
		}
		if i%2 == 1 {
			wantCmd = "unknown"
		}
		if r.Event != EventRefused || r.Command != wantCmd || r.Actor.DBRole != wantRole || r.ErrorClass != "policy: access denied" ||
			r.Actor.Name != "" || r.Actor.OSUser != "" || r.RunID == "" {
			t.Fatalf("refusal record %d: %+v", r.Seq, r)
		}
	}
	mustVerify(t, pool, 5)
	mustVerifyFile(t, mirror, 5)
	if p, err := CompareFileAndTable(ctx, pool, mirror); err != nil || p != nil {
		t.Fatalf("compare: %+v %v", p, err)
	}
}

// TestBadRowDoesNotBlock: a malformed or mis-chained row (a past forgery by
// a superuser) does not stop the next append by a healthcare_admin member;
// verify reports exactly that seq, and the mirror skips it.
func TestBadRowDoesNotBlock(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		row  func(recs []Record) (string, string, string) // record, hash, prev of row 4
		kind string
	}{
		{"malformed", func([]Record) (string, string, string) { return `{"forged": true}`, "x", "y" }, KindMalformed},
		{"mis-chained", func(recs []Record) (string, string, string) {
			r := recs[2]
			r.Seq, r.Prev, r.Reason = 4, ZeroHash, "forged"
			r.Hash = r.ComputeHash()
			return string(r.CanonicalJSON()), r.Hash, r.Prev
		}, KindBrokenLink},
		{"bad hash column", func(recs []Record) (string, string, string) {
			r := recs[2]
			r.Seq, r.Prev = 4, recs[2].Hash
			r.Hash = r.ComputeHash()
			return string(r.CanonicalJSON()), strings.Repeat("\u00e9", 70), r.Prev
		}, KindHashMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, pool := newDB(t)
			a := pgtest.NewActors(t, url)
			grantAudit(t, pool)
			ha := openPool(t, a.URL(a.HealthcareAdmin))
			mirror := filepath.Join(t.TempDir(), "audit.jsonl")
			l := openLog(t, ha, mirror)
			recs := appendN(t, l, 3)
			rec, hash, prev := tc.row(recs)
			if _, err := pool.Exec(ctx, "INSERT INTO pgphi.audit_log VALUES (4, now(), $1::jsonb, $2, $3)", rec, hash, prev); err != nil {
				t.Fatal(err)
			}
			r, err := l.Append(ctx, sample(3))
			if err != nil {
				t.Fatalf("append after a bad row: %v", err)
			}
			if r.Seq != 5 || r.Actor.DBRole != a.HealthcareAdmin {
				t.Fatalf("appended seq %d by %q", r.Seq, r.Actor.DBRole)
			}
			if _, err := l.Append(ctx, sample(4)); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 || rep.Problems[0].Seq != 4 || rep.Problems[0].Kind != tc.kind {
				t.Fatalf("problems %+v; want only %s at 4", rep.Problems, tc.kind)
			}
			if sk := l.Skipped(); len(sk) != 1 || sk[0].Seq != 4 {
				t.Fatalf("mirror skipped %+v; want seq 4", sk)
			}
			frep, err := VerifyFile(mirror)
			if err != nil {
				t.Fatal(err)
			}
			if len(frep.Problems) != 1 || frep.Problems[0].Seq != 4 || frep.Problems[0].Kind != KindGap || frep.Records != 5 {
				t.Fatalf("file problems %+v (%d records); want only a gap at 4", frep.Problems, frep.Records)
			}
		})
	}
}

// TestAttackCheckpoints: the three checkpoint attacks of the review.
func TestAttackCheckpoints(t *testing.T) {
	ctx := context.Background()
	url, pool := newDB(t)
	a := pgtest.NewActors(t, url)
	grantAudit(t, pool)
	appendN(t, openLog(t, pool, ""), 6)
	ao := openPool(t, a.URL(a.AuditOfficer))
	key := testKey(1)
	keys := []ed25519.PublicKey{pubOf(key)}

	// (a) A garbage signature is not accepted, with no key configured, with
	// another signer's key, or with a fingerprint naming the right key.
	cp, err := SignCheckpoint(ctx, ao, key)
	if err != nil {
		t.Fatal(err)
	}
	garbage := *cp
	garbage.Signature = base64.StdEncoding.EncodeToString(make([]byte, 64))
	if err := ProveCheckpoint(ctx, pool, &garbage, nil); !errors.Is(err, ErrBadCheckpoint) || !errors.Is(err, ErrNoCheckpointKey) {
		t.Fatalf("garbage signature, no key: %v", err)
	}
	if err := ProveCheckpoint(ctx, pool, cp, nil); !errors.Is(err, ErrNoCheckpointKey) {
		t.Fatalf("valid signature but no key: %v", err)
	}
	if err := ProveCheckpoint(ctx, pool, &garbage, keys); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("garbage signature: %v", err)
	}
	other := *cp
	other.KeyFingerprint = Fingerprint(pubOf(testKey(9)))
	other.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(testKey(9), checkpointMessage(other.Seq, other.Hash, other.Time, other.KeyFingerprint)))
	if err := ProveCheckpoint(ctx, pool, &other, keys); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("unknown signer: %v", err)
	}
	if err := ProveCheckpoint(ctx, pool, cp, keys); err != nil {
		t.Fatalf("valid checkpoint: %v", err)
	}

	// (c) The audit officer cannot record a bogus checkpoint row: no direct
	// INSERT, and the function checks seq and hash against the chain.
	var head string
	pool.QueryRow(ctx, "SELECT hash FROM pgphi.audit_log WHERE seq = 6").Scan(&head)
	sig := base64.StdEncoding.EncodeToString(make([]byte, 64))
	fp := Fingerprint(pubOf(testKey(7)))
	record := func(seq int64, hash string, at time.Time) error {
		_, err := ao.Exec(ctx, "SELECT pgphi.audit_checkpoint_record($1, $2, $3, $4, $5)", seq, hash, at, fp, sig)
		return err
	}
	now := time.Now()
	wantSQLState(t, "wrong hash", record(6, strings.Repeat("a", 64), now), "22023")
	wantSQLState(t, "beyond the head", record(99, head, now), "22023")
	wantSQLState(t, "before the record", record(6, head, now.Add(-time.Hour)), "22023")
	wantSQLState(t, "in the future", record(6, head, now.Add(time.Hour)), "22023")
	wantSQLState(t, "not hex", record(6, strings.ToUpper(head), now), "22023")
	for _, role := range []string{a.HealthcareAdmin, a.Outsider} {
		_, err := a.Connect(t, role).Exec(ctx, "SELECT pgphi.audit_checkpoint_record($1, $2, now(), $3, $4)", int64(6), head, fp, sig)
		wantSQLState(t, role+": checkpoint_record", err, "42501")
	}
	// A row with the right seq and hash but a garbage signature can be
	// recorded; it blocks nothing and verify with the key reports it.
	if err := record(6, head, now); err != nil {
		t.Fatal(err)
	}
	// A bogus row inserted by a superuser (wrong hash) does not block
	// signing either.
	if _, err := pool.Exec(ctx, "INSERT INTO pgphi.audit_checkpoints VALUES (3, $1, now(), $2, $3)", strings.Repeat("b", 64), fp, sig); err != nil {
		t.Fatal(err)
	}
	appendN(t, openLog(t, pool, ""), 1)
	cp2, err := SignCheckpoint(ctx, ao, key)
	if err != nil {
		t.Fatalf("signing with bogus rows present: %v", err)
	}
	if cp2.Seq != 7 {
		t.Fatalf("signed seq %d", cp2.Seq)
	}
	rep, err := VerifyWithKeys(ctx, pool, keys)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []string
	for _, p := range rep.Problems {
		if p.Kind != KindCheckpointInvalid {
			t.Fatalf("unexpected problem %+v", p)
		}
		seqs = append(seqs, fmt.Sprint(p.Seq))
	}
	if strings.Join(seqs, ",") != "3,6" {
		t.Fatalf("invalid checkpoints reported at %v; want 3,6", seqs)
	}
	rep, err = Verify(ctx, pool) // without keys: the wrong hash still shows
	if err != nil {
		t.Fatal(err)
	}
	firstProblem(t, rep, 3, KindCheckpointMismatch)

	// (b) A log whose prefix before the checkpoint was deleted does not
	// extend it, even though the records from the checkpoint on are intact.
	superuser(t, pool, "DELETE FROM pgphi.audit_log WHERE seq <= 2")
	var p *Problem
	if err := ProveCheckpoint(ctx, pool, cp, keys); !errors.As(err, &p) || p.Seq != 1 || p.Kind != KindGap {
		t.Fatalf("prefix deleted: %v", err)
	}
	// Variant: only a record in the middle of the prefix.
	_, pool2 := newDB(t)
	appendN(t, openLog(t, pool2, ""), 6)
	cp3, err := SignCheckpoint(ctx, pool2, key)
	if err != nil {
		t.Fatal(err)
	}
	superuser(t, pool2, "DELETE FROM pgphi.audit_log WHERE seq = 3")
	if err := ProveCheckpoint(ctx, pool2, cp3, keys); !errors.As(err, &p) || p.Seq != 3 || p.Kind != KindGap {
		t.Fatalf("middle record deleted: %v", err)
	}
}

// TestUpgradeRevokesInsert: an installation where an earlier `roles init`
// granted INSERT on the audit tables loses it when 0010 is applied.
func TestUpgradeRevokesInsert(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a := pgtest.NewActors(t, url)
	conn := pgtest.Connect(t, url)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA pgphi; CREATE TABLE pgphi.schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"0001_init.sql", "0002_blind_indexes.sql", "0003_lifecycle.sql", "0004_audit.sql", "0005_policy.sql",
		"0006_checks.sql", "0007_write_counter.sql", "0008_verification_snapshot.sql", "0009_trust.sql"} {
		body, err := readMigration(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, body); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var v int
		fmt.Sscanf(f, "%d", &v)
		if _, err := conn.Exec(ctx, "INSERT INTO pgphi.schema_version (version) VALUES ($1)", v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `GRANT USAGE ON SCHEMA pgphi TO pgphi_healthcare_admin, pgphi_audit_officer;
		GRANT SELECT, INSERT ON pgphi.audit_log TO pgphi_healthcare_admin, pgphi_audit_officer;
		GRANT SELECT, INSERT ON pgphi.audit_checkpoints TO pgphi_audit_officer, `+pgx.Identifier{a.Outsider}.Sanitize()+`;
		GRANT INSERT ON pgphi.audit_log TO PUBLIC`); err != nil {
		t.Fatal(err)
	}
	pool := openPool(t, url)
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ensure(ctx, pc); err != nil {
		t.Fatal(err)
	}
	pc.Release()
	for _, role := range []string{a.HealthcareAdmin, a.AuditOfficer, a.Outsider} {
		c := a.Connect(t, role)
		_, err := c.Exec(ctx, "INSERT INTO pgphi.audit_log VALUES (1, now(), '{}', 'x', 'y')")
		wantSQLState(t, role+": audit_log after upgrade", err, "42501")
		_, err = c.Exec(ctx, "INSERT INTO pgphi.audit_checkpoints VALUES (1, 'x', now(), 'SHA256:x', 'x')")
		wantSQLState(t, role+": audit_checkpoints after upgrade", err, "42501")
	}
}

// readMigration reads one of pgphi's migration files from the source tree.
func readMigration(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("..", "state", "sql", name))
	return string(b), err
}

func ensure(ctx context.Context, c state.Conn) (int, error) { return state.Ensure(ctx, c) }

// TestMirrorDivergence: a valid table record that differs from the mirror's
// valid last line (a consistent rewrite) stops appends to the file; an
// invalid table record there does not (a bad row never blocks).
func TestMirrorDivergence(t *testing.T) {
	ctx := context.Background()
	_, pool := newDB(t)
	mirror := filepath.Join(t.TempDir(), "audit.jsonl")
	l := openLog(t, pool, mirror)
	recs := appendN(t, l, 3)
	r := recs[2]
	r.Reason = "rewritten"
	rewrite(t, pool, r)
	if _, err := l.Append(ctx, sample(3)); !errors.Is(err, ErrMirror) {
		t.Fatalf("append over a consistently diverged mirror: %v", err)
	}
	superuser(t, pool, `UPDATE pgphi.audit_log SET record = jsonb_set(record, '{reason}', '"edited"') WHERE seq = 3`)
	if _, err := l.Append(ctx, sample(4)); err != nil {
		t.Fatalf("append over an invalid table record: %v", err)
	}
	if sk := l.Skipped(); len(sk) == 0 || sk[0].Seq != 3 || sk[0].Kind != KindDiffers {
		t.Fatalf("skipped %+v", sk)
	}
}
