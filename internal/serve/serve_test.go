package serve_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/engine"
)

// insertRow writes one row as the application's writer would, from the
// assignments of /v1/encrypt (ciphertext base64, terms as decimal strings).
func (f *fixture) insertRow(t *testing.T, uid string, assignments map[string]map[string]any) {
	t.Helper()
	cols := []string{"uid"}
	vals := []string{"$1"}
	args := []any{uid}
	for _, a := range assignments {
		for col, v := range a {
			cols = append(cols, q(col))
			args = append(args, v)
			n := len(args)
			switch {
			case strings.HasSuffix(col, "_encrypted"):
				vals = append(vals, fmt.Sprintf("decode($%d::text, 'base64')", n))
			case strings.HasSuffix(col, "_bidx"):
				if v != nil {
					var terms []string
					for _, x := range v.([]any) {
						terms = append(terms, x.(string))
					}
					args[n-1] = terms
				}
				vals = append(vals, fmt.Sprintf("$%d::text[]::bigint[]", n))
			case col == "date_of_birth":
				vals = append(vals, fmt.Sprintf("$%d::text::date", n))
			case col == "visits":
				vals = append(vals, fmt.Sprintf("$%d::text::int", n))
			default:
				vals = append(vals, fmt.Sprintf("$%d::text", n))
			}
		}
	}
	sql := "INSERT INTO public.patient (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ")"
	if _, err := f.writer.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("insert %s: %v", uid, err)
	}
}

// encryptRow asks /v1/encrypt for each column's assignments of one row.
func (f *fixture) encryptRow(t *testing.T, token, uid string, values map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for col, v := range values {
		status, body, raw := f.call(t, "POST", "/v1/encrypt", token, map[string]any{
			"table": "patient", "column": col, "rows": []any{map[string]any{"key": map[string]string{"uid": uid}, "value": v}}})
		if status != http.StatusOK {
			t.Fatalf("encrypt %s: %d %s", col, status, raw)
		}
		row := body["rows"].([]any)[0].(map[string]any)
		a := row["assignments"].(map[string]any)
		if v != nil {
			if ct, _ := row["ciphertext"].(string); ct == "" || a[col+"_encrypted"] != ct {
				t.Fatalf("encrypt %s: ciphertext %v, assignments %v", col, row["ciphertext"], a)
			}
			if col != "visits" {
				if terms, _ := row["terms"].([]any); len(terms) == 0 {
					t.Fatalf("encrypt %s: no terms", col)
				}
			}
		}
		out[col] = a
	}
	return out
}

// The whole application path over HTTP, after cutover: encrypt, write,
// search with every kind, read the columns back and decrypt; verify agrees.
func TestRoundTripEveryKind(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := engine.SetFlag(ctx, f.admin, engine.FlagUseEncryptedSearch, true); err != nil {
		t.Fatal(err)
	}
	if err := engine.SetFlag(ctx, f.admin, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	app := f.token(t, "app", f.actors.AppWriter)
	desk := f.token(t, "front-desk", f.actors.HealthcareAdmin)
	rows := map[string]map[string]any{
		"P10": {"last_name": "Okafor", "phone": "+1 650-253-0000", "date_of_birth": "1984-03-15", "visits": 2},
		"P11": {"last_name": "Okafour", "phone": "(415) 555-0199", "date_of_birth": "2001-11-30", "visits": nil},
	}
	for _, uid := range []string{"P10", "P11"} {
		a := f.encryptRow(t, app, uid, rows[uid])
		// require_encryption is on: the plaintext is written NULL.
		if v, ok := a["last_name"]["last_name"]; !ok || v != nil {
			t.Fatalf("plaintext assignment under require_encryption: %v (present %v)", v, ok)
		}
		f.insertRow(t, uid, a)
	}
	age := time.Now().UTC().Year() - 1984
	cases := []struct {
		column, kind, value string
		minAge, maxAge      int
		want                []string
	}{
		{"last_name", "exact", "okafor", 0, 0, []string{"P10"}},
		{"last_name", "prefix", "Okaf", 0, 0, []string{"P10", "P11"}},
		{"last_name", "contains", "afou", 0, 0, []string{"P11"}},
		{"last_name", "phonetic", "Okafor", 0, 0, []string{"P10", "P11"}},
		{"phone", "phone", "650 253 0000", 0, 0, []string{"P10"}},
		{"phone", "last4", "0199", 0, 0, []string{"P11"}},
		{"phone", "area-code", "+1 415", 0, 0, []string{"P1", "P11"}},
		{"date_of_birth", "date", "1984-03-15", 0, 0, []string{"P10"}},
		{"date_of_birth", "year", "2001", 0, 0, []string{"P11"}},
		{"date_of_birth", "year-month", "1980-02", 0, 0, []string{"P1"}},
		{"date_of_birth", "age-between", "", age - 1, age, []string{"P10"}},
	}
	for _, c := range cases {
		req := map[string]any{"table": "patient", "column": c.column, "kind": c.kind, "value": c.value,
			"reason": "front desk lookup", "columns": []string{"last_name", "visits"}}
		if c.kind == "age-between" {
			delete(req, "value")
			req["min_age"], req["max_age"] = c.minAge, c.maxAge
		}
		before := f.auditHead(t)
		status, body, raw := f.call(t, "POST", "/v1/search", desk, req)
		if status != http.StatusOK {
			t.Fatalf("%s %s: %d %s", c.column, c.kind, status, raw)
		}
		var got []string
		for _, k := range body["keys"].([]any) {
			got = append(got, k.(map[string]any)["uid"].(string))
		}
		if c.kind == "age-between" {
			// P1 (1980) may fall in the range too, depending on today's date.
			got = slices.DeleteFunc(got, func(s string) bool { return s == "P1" })
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %s: keys %v, want %v", c.column, c.kind, got, c.want)
		}
		for i, r := range body["rows"].([]any) {
			uid := body["keys"].([]any)[i].(map[string]any)["uid"].(string)
			m := r.(map[string]any)
			if want, ok := rows[uid]; ok && m["last_name"] != want["last_name"] {
				t.Errorf("%s %s: row %s last_name %v", c.column, c.kind, uid, m["last_name"])
			}
		}
		recs := f.auditRecords(t, before)
		if len(recs) != 1 || recs[0].Command != "api.search" || recs[0].Actor.Name != "front-desk" ||
			recs[0].Actor.DBRole != f.actors.HealthcareAdmin || recs[0].Reason != "front desk lookup" ||
			recs[0].Details["kind"] != c.kind || recs[0].Rows != int64(len(body["keys"].([]any))) {
			t.Errorf("%s %s: audit records %+v", c.column, c.kind, recs)
		}
	}
	// Decrypt what the table holds, in one batch, as the client's role.
	var ct1, ct2 []byte
	if err := f.admin.QueryRow(ctx, "SELECT (SELECT last_name_encrypted FROM public.patient WHERE uid = 'P10'), (SELECT last_name_encrypted FROM public.patient WHERE uid = 'P2')").Scan(&ct1, &ct2); err != nil {
		t.Fatal(err)
	}
	before := f.auditHead(t)
	status, body, raw := f.call(t, "POST", "/v1/decrypt", desk, map[string]any{"table": "patient", "column": "last_name", "reason": "chart review",
		"rows": []any{
			map[string]any{"key": map[string]string{"uid": "P10"}, "ciphertext": b64(ct1)},
			map[string]any{"key": map[string]string{"uid": "P2"}, "ciphertext": b64(ct2)},
			map[string]any{"key": map[string]string{"uid": "P11"}, "ciphertext": nil},
		}})
	if status != http.StatusOK {
		t.Fatalf("decrypt: %d %s", status, raw)
	}
	got := body["rows"].([]any)
	if got[0].(map[string]any)["value"] != "Okafor" || got[1].(map[string]any)["value"] != "Jones" || got[2].(map[string]any)["value"] != nil {
		t.Fatalf("decrypt: %s", raw)
	}
	recs := f.auditRecords(t, before)
	if len(recs) != 1 || recs[0].Command != "api.decrypt" || recs[0].Rows != 3 || recs[0].Actor.DBRole != f.actors.HealthcareAdmin {
		t.Fatalf("decrypt audit: %+v", recs)
	}
	// A ciphertext moved to another row does not open: 400, no value.
	status, _, raw = f.call(t, "POST", "/v1/decrypt", desk, map[string]any{"table": "patient", "column": "last_name", "reason": "chart review",
		"rows": []any{map[string]any{"key": map[string]string{"uid": "P11"}, "ciphertext": b64(ct1)}}})
	if status != http.StatusBadRequest || strings.Contains(string(raw), "Okafor") {
		t.Fatalf("moved ciphertext: %d %s", status, raw)
	}
	// The records written inside the requests' transactions chain like any.
	if rep, err := audit.Verify(ctx, f.admin); err != nil || !rep.OK() {
		t.Fatalf("audit verify: %+v %v", rep, err)
	}
	// What pgphi verifies, the application wrote.
	res, err := verify(ctx, f)
	if err != nil || !res {
		t.Fatalf("verify after writes through serve: %v %v", res, err)
	}
	// columns and flags
	status, body, raw = f.call(t, "GET", "/v1/columns", app, nil)
	if status != http.StatusOK || len(body["columns"].([]any)) != 4 {
		t.Fatalf("columns: %d %s", status, raw)
	}
	status, body, raw = f.call(t, "GET", "/v1/flags", app, nil)
	if status != http.StatusOK || body["flags"].(map[string]any)["require_encryption"] != true {
		t.Fatalf("flags: %d %s", status, raw)
	}
}
