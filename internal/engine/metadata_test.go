package engine

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/internal/config"
)

const metaDDL = `CREATE TABLE p (id int PRIMARY KEY, nm text, tel text);
INSERT INTO p SELECT g, 'Name ' || g, '+44 20 7946 ' || lpad(g::text, 4, '0') FROM generate_series(1, 50) g;`

const metaConfig = `version: 1
tables:
  p:
    columns:
      nm: { class: pii, search: [exact, prefix, contains], search_options: { token_size: 4, prefix_max: 6 } }
      tel: { class: pii, search: [phone], search_options: { phone_region: GB } }
`

func storedOptions(t *testing.T, f *fixture) map[string]string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT column_name || ' ' || sub_kind, options::text, format_version FROM pgphi.blind_indexes`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k string
		var o *string
		var v int
		if err := rows.Scan(&k, &o, &v); err != nil {
			t.Fatal(err)
		}
		if v != blindindex.FormatVersion {
			t.Fatalf("%s: format_version %d", k, v)
		}
		if o == nil {
			out[k] = "NULL"
		} else {
			out[k] = *o
		}
	}
	return out
}

// TestTermOptionsRecordedAndWin: the first apply records each column's term
// options under their documented names; a later config with other options
// is refused by apply and by the search path, naming the option, and the
// stored terms stay what they were.
func TestTermOptionsRecordedAndWin(t *testing.T) {
	f := setup(t, metaDDL, metaConfig)
	f.apply(t)
	got := storedOptions(t, f)
	wantNm := `{"prefix_max": 6, "prefix_min": 3, "token_size": 4, "fold_accents": true, "phone_region": "US"}`
	wantTel := `{"prefix_max": 5, "prefix_min": 3, "token_size": 3, "fold_accents": true, "phone_region": "GB"}`
	for k, v := range got {
		want := wantNm
		if strings.HasPrefix(k, "tel ") {
			want = wantTel
		}
		if v != want {
			t.Errorf("%s: options %s, want %s", k, v, want)
		}
	}
	if len(got) != 1+4+1+3 {
		t.Fatalf("families: %v", got)
	}
	ctx := context.Background()
	var before string
	f.pool.QueryRow(ctx, `SELECT string_agg(nm_bidx::text, ';' ORDER BY id) FROM p`).Scan(&before)

	// Same kinds, other token size: refused everywhere, nothing changes.
	cfg, err := config.Parse("pgphi.yaml", []byte(strings.Replace(metaConfig, "token_size: 4", "token_size: 3", 1)))
	if err != nil {
		t.Fatal(err)
	}
	f.cfg, f.runner.Config = cfg, cfg
	f.replan(t)
	err = f.runner.Apply(ctx)
	if !errors.Is(err, ErrOptionsChanged) || !strings.Contains(err.Error(), "token_size: recorded 4, now 3") {
		t.Fatalf("apply with changed options: %v", err)
	}
	if _, err := LoadIndexers(ctx, f.pool, f.ring, f.plan); !errors.Is(err, ErrOptionsChanged) {
		t.Fatalf("search with changed options: %v", err)
	}
	var after string
	f.pool.QueryRow(ctx, `SELECT string_agg(nm_bidx::text, ';' ORDER BY id) FROM p`).Scan(&after)
	if after != before {
		t.Fatal("terms changed")
	}
	// An option the column's kinds do not use does not count (tel has no
	// contains).
	cfg, _ = config.Parse("pgphi.yaml", []byte(strings.Replace(metaConfig, "phone_region: GB", "phone_region: GB, token_size: 5", 1)))
	f.cfg, f.runner.Config = cfg, cfg
	f.replan(t)
	if _, err := LoadIndexers(ctx, f.pool, f.ring, f.plan); err != nil {
		t.Fatalf("unused option refused: %v", err)
	}
	if d := storedOptions(t, f); d["tel phone/e164"] != wantTel {
		t.Fatalf("options rewritten: %v", d["tel phone/e164"])
	}
}

// TestTermOptionsUpgradeInPlace: rows written before 0013 get their options
// from the plan spec that created them (Go field names, defaults not filled
// in); rows without such a plan get them at the next apply.
func TestTermOptionsUpgradeInPlace(t *testing.T) {
	f := setup(t, metaDDL, metaConfig)
	f.apply(t)
	want := storedOptions(t, f)
	ctx := context.Background()
	body, err := os.ReadFile("../state/sql/0013_term_metadata.sql")
	if err != nil {
		t.Fatal(err)
	}
	_, upgrade, ok := strings.Cut(string(body), "-- Upgrade in place")
	if !ok {
		t.Fatal("0013 has no upgrade section")
	}
	if _, err := f.pool.Exec(ctx, `UPDATE pgphi.blind_indexes SET options = NULL`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "-- "+upgrade); err != nil {
		t.Fatal(err)
	}
	if got := storedOptions(t, f); !equalMaps(got, want) {
		t.Fatalf("filled from the plan spec:\n got %v\nwant %v", got, want)
	}
	// No plan to take them from: the next apply records them.
	if _, err := f.pool.Exec(ctx, `UPDATE pgphi.blind_indexes SET options = NULL WHERE column_name = 'tel'`); err != nil {
		t.Fatal(err)
	}
	f.apply(t)
	if got := storedOptions(t, f); !equalMaps(got, want) {
		t.Fatalf("filled by apply:\n got %v\nwant %v", got, want)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
