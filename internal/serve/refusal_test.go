package serve_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/internal/audit"
	"github.com/pgphi/pgphi/internal/serve"
)

// Every refusal answers its status with a JSON error body and writes one
// refused audit record naming the endpoint, the client and the code. The
// attackers are separate non-superuser roles (pgtest actors).
func TestRefusalsAreAnsweredAndAudited(t *testing.T) {
	f := newFixture(t, func(c *serve.Config) { c.MaxBody, c.MaxRows, c.Rate, c.Burst = 16<<10, 20, 0.01, 3 })
	ctx := context.Background()
	desk := f.token(t, "desk", f.actors.HealthcareAdmin)
	auditor := f.token(t, "auditor", f.actors.AuditOfficer)
	app := f.token(t, "app", f.actors.AppWriter)
	app2 := f.token(t, "app2", f.actors.AppWriter)
	desk2 := f.token(t, "desk2", f.actors.HealthcareAdmin)
	stranger := f.token(t, "stranger", f.actors.Outsider) // serve's login is no member of it
	gone := f.token(t, "gone", f.actors.HealthcareAdmin)
	if err := serve.Revoke(ctx, f.dba, "gone"); err != nil {
		t.Fatal(err)
	}
	// The revoked name can be given to a new client; the old token stays dead.
	f.token(t, "gone", f.actors.HealthcareAdmin)

	decrypt := func(reason string) map[string]any {
		return map[string]any{"table": "patient", "column": "last_name", "reason": reason,
			"rows": []any{map[string]any{"key": map[string]string{"uid": "P1"}, "ciphertext": nil}}}
	}
	search := map[string]any{"table": "patient", "column": "last_name", "kind": "exact", "value": "smith", "reason": "lookup"}
	var many []any
	for range 21 {
		many = append(many, map[string]any{"key": map[string]string{"uid": "P1"}, "value": "x"})
	}
	cases := []struct {
		name, path, token string
		body              any
		status            int
		code, client      string
	}{
		{"no token", "/v1/decrypt", "", decrypt("r"), 401, serve.CodeUnauthorized, ""},
		{"bad token", "/v1/search", "pgphi_not-a-token", search, 401, serve.CodeUnauthorized, ""},
		{"revoked token", "/v1/decrypt", gone, decrypt("r"), 401, serve.CodeUnauthorized, ""},
		{"no token for encrypt", "/v1/encrypt", "", map[string]any{"table": "patient", "column": "last_name", "rows": []any{}}, 401, serve.CodeUnauthorized, ""},
		{"no token for columns", "/v1/columns", "", nil, 401, serve.CodeUnauthorized, ""},
		{"audit officer decrypts", "/v1/decrypt", auditor, decrypt("r"), 403, serve.CodeForbidden, "auditor"},
		{"audit officer searches", "/v1/search", auditor, search, 403, serve.CodeForbidden, "auditor"},
		{"application writer decrypts", "/v1/decrypt", app, decrypt("r"), 403, serve.CodeForbidden, "app"},
		{"application writer searches", "/v1/search", app, search, 403, serve.CodeForbidden, "app"},
		{"role serve cannot act as", "/v1/decrypt", stranger, decrypt("r"), 403, serve.CodeForbidden, "stranger"},
		{"missing reason", "/v1/decrypt", desk, decrypt("  "), 400, serve.CodeBadRequest, "desk"},
		{"missing search reason", "/v1/search", desk, map[string]any{"table": "patient", "column": "last_name", "kind": "exact", "value": "smith"}, 400, serve.CodeBadRequest, "desk"},
		{"oversized body", "/v1/encrypt", app, []byte(`{"table":"patient","column":"last_name","rows":[{"key":{"uid":"P1"},"value":"` + strings.Repeat("a", 20<<10) + `"}]}`), 413, serve.CodeTooLarge, "app"},
		{"too many rows", "/v1/encrypt", app2, map[string]any{"table": "patient", "column": "last_name", "rows": many}, 413, serve.CodeTooLarge, "app2"},
		{"not JSON", "/v1/encrypt", desk, []byte(`{"table": Smith`), 400, serve.CodeBadRequest, "desk"},
		{"injected table name", "/v1/search", desk2, map[string]any{"table": "patient; DROP TABLE public.patient; --", "column": "last_name", "kind": "exact", "value": "x", "reason": "r"}, 400, serve.CodeBadRequest, "desk2"},
		{"injected column name", "/v1/decrypt", desk2, map[string]any{"table": "patient", "column": `last_name" FROM pgphi.data_keys --`, "reason": "r", "rows": []any{}}, 400, serve.CodeBadRequest, "desk2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.auditHead(t)
			status, body, raw := f.call(t, "POST", c.path, c.token, c.body)
			if c.path == "/v1/columns" {
				status, body, raw = f.call(t, "GET", c.path, c.token, nil)
			}
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, raw)
			}
			e, _ := body["error"].(map[string]any)
			if e == nil || e["code"] != c.code || e["message"] == "" {
				t.Fatalf("error body %s", raw)
			}
			recs := f.auditRecords(t, before)
			if len(recs) != 1 || recs[0].Event != "refused" || recs[0].ErrorClass != "serve: "+c.code ||
				!strings.HasPrefix(recs[0].Command, "serve.") || recs[0].Details["client"] != c.client {
				t.Fatalf("audit records %+v", recs)
			}
			// A known client's refusal names the protected column it asked for.
			if c.status == 403 && c.client != "stranger" && (len(recs[0].Tables) != 1 || recs[0].Tables[0] != "public.patient" || recs[0].Columns[0] != "last_name") {
				t.Fatalf("refusal record without the column asked for: %+v", recs[0])
			}
		})
	}
	var n int
	if err := f.admin.QueryRow(ctx, "SELECT count(*) FROM public.patient").Scan(&n); err != nil || n != 2 {
		t.Fatalf("the table after injected names: %d rows, %v", n, err)
	}
	// The refusal records and the clients' records form one verified chain.
	if rep, err := audit.Verify(ctx, f.admin); err != nil || !rep.OK() || rep.Records < int64(len(cases)) {
		t.Fatalf("audit verify: %+v %v", rep, err)
	}
	// Rate: the bucket holds 3 requests and refills at one per 100 s.
	t.Run("rate exceeded", func(t *testing.T) {
		rater := f.token(t, "rater", f.actors.AppWriter)
		enc := map[string]any{"table": "patient", "column": "last_name", "rows": []any{map[string]any{"key": map[string]string{"uid": "P9"}, "value": "x"}}}
		for i := range 3 {
			if status, _, raw := f.call(t, "POST", "/v1/encrypt", rater, enc); status != 200 {
				t.Fatalf("request %d: %d %s", i+1, status, raw)
			}
		}
		before := f.auditHead(t)
		status, body, raw := f.call(t, "POST", "/v1/encrypt", rater, enc)
		if status != http.StatusTooManyRequests || body["error"].(map[string]any)["code"] != serve.CodeRateLimited {
			t.Fatalf("4th request: %d %s", status, raw)
		}
		recs := f.auditRecords(t, before)
		if len(recs) != 1 || recs[0].ErrorClass != "serve: rate_limited" || recs[0].Details["client"] != "rater" || len(recs[0].Tables) != 0 {
			t.Fatalf("audit records %+v", recs)
		}
	})
}
