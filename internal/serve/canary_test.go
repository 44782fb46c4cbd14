package serve_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgphi/pgphi/internal/engine"
)

// Planted values (as values, search values and row keys) appear in no
// error body, log line, metric or audit record, whatever the request does.
func TestCanariesStayOut(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := engine.SetFlag(ctx, f.admin, engine.FlagRequireEncryption, true); err != nil {
		t.Fatal(err)
	}
	const (
		name   = "Qzcanaryname"
		search = "Qzcanarysearch"
		key    = "QZCANARYKEY"
		phone  = "+1 415 555 7301"
	)
	canaries := []string{name, search, key, "7301", strings.ToLower(name), strings.ToUpper(search)}
	desk := f.token(t, "desk", f.actors.HealthcareAdmin)
	app := f.token(t, "app", f.actors.AppWriter)
	auditor := f.token(t, "auditor", f.actors.AuditOfficer)
	var bodies []string
	keep := func(status int, raw []byte) {
		if status >= 400 {
			bodies = append(bodies, string(raw))
		}
	}
	enc := func(col string, v any, k string) {
		status, _, raw := f.call(t, "POST", "/v1/encrypt", app, map[string]any{"table": "patient", "column": col,
			"rows": []any{map[string]any{"key": map[string]string{"uid": k}, "value": v}}})
		keep(status, raw)
	}
	enc("last_name", name, key)           // 200
	enc("visits", name, key)              // 400: not an integer
	enc("date_of_birth", name+"-01", key) // 400: not a date
	enc("last_name", name, "")            // fine key text
	status, _, raw := f.call(t, "POST", "/v1/encrypt", app, map[string]any{"table": "patient", "column": "last_name",
		"rows": []any{map[string]any{"key": map[string]string{"uid": key, name: key}, "value": name}}}) // 400: wrong key columns
	keep(status, raw)
	status, _, raw = f.call(t, "POST", "/v1/encrypt", app, []byte(`{"table":"patient","column":"last_name","rows":[{"key":{"uid":"`+key+`"},"value":`+name+`}]}`)) // not JSON
	keep(status, raw)
	status, _, raw = f.call(t, "POST", "/v1/encrypt", app, []byte(`{"table":"patient","column":"last_name","rows":[{"key":{"uid":"`+key+`"},"value":"`+name+`","`+name+`":1}]}`)) // unknown field
	keep(status, raw)
	status, _, raw = f.call(t, "POST", "/v1/encrypt", app, []byte(`{"table":"patient","column":"last_name","rows":[{"key":{"uid":["`+key+`"]},"value":"`+name+`"}]}`)) // key not a string
	keep(status, raw)
	// A sealed value, then decrypted by the wrong row, by the wrong role,
	// with a damaged ciphertext.
	_, body, _ := f.call(t, "POST", "/v1/encrypt", app, map[string]any{"table": "patient", "column": "last_name",
		"rows": []any{map[string]any{"key": map[string]string{"uid": key}, "value": name}}})
	ct := body["rows"].([]any)[0].(map[string]any)["ciphertext"].(string)
	raw2, _ := base64.StdEncoding.DecodeString(ct)
	raw2[len(raw2)-1] ^= 1
	for _, c := range []struct {
		token, uid, ct string
	}{{desk, "P1", ct}, {auditor, key, ct}, {desk, key, base64.StdEncoding.EncodeToString(raw2)}, {desk, key, "%%" + name}} {
		status, _, raw := f.call(t, "POST", "/v1/decrypt", c.token, map[string]any{"table": "patient", "column": "last_name", "reason": "review",
			"rows": []any{map[string]any{"key": map[string]string{"uid": c.uid}, "ciphertext": c.ct}}})
		keep(status, raw)
	}
	// Searches with planted values: found nothing, malformed, refused.
	for _, c := range []struct{ token, column, kind, value string }{
		{desk, "last_name", "exact", search}, {desk, "last_name", "phonetic", search}, {desk, "date_of_birth", "date", search},
		{desk, "phone", "phone", search}, {desk, "phone", "last4", phone}, {auditor, "last_name", "exact", search},
		{desk, "last_name", "prefix", search}, {"", "last_name", "exact", search},
	} {
		status, body, raw := f.call(t, "POST", "/v1/search", c.token, map[string]any{"table": "patient", "column": c.column, "kind": c.kind, "value": c.value, "reason": "lookup"})
		keep(status, raw)
		if status == 200 && strings.Contains(string(raw), search) {
			t.Errorf("search answer holds the search value: %s", raw)
		}
		_ = body
	}
	// Everything the server said, logged, counted and recorded.
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(f.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	metrics := rec.Body.String()
	if !strings.Contains(metrics, "pgphi_serve_requests_total") || !strings.Contains(metrics, "pgphi_serve_refusals_total") {
		t.Fatalf("metrics: %s", metrics)
	}
	var auditText bytes.Buffer
	for _, r := range f.auditRecords(t, 0) {
		auditText.WriteString(r.Command + " " + r.Reason + " " + strings.Join(r.Tables, ",") + " " + strings.Join(r.Columns, ",") + " " + r.ErrorClass + " " + r.Actor.Name)
		for k, v := range r.Details {
			auditText.WriteString(" " + k + "=" + v)
		}
		auditText.WriteString("\n")
	}
	var all bytes.Buffer
	f.admin.QueryRow(ctx, "SELECT string_agg(record::text, E'\\n') FROM pgphi.audit_log").Scan(new(string))
	var recordsJSON string
	if err := f.admin.QueryRow(ctx, "SELECT COALESCE(string_agg(record::text, E'\\n'), '') FROM pgphi.audit_log").Scan(&recordsJSON); err != nil {
		t.Fatal(err)
	}
	if len(bodies) < 15 {
		t.Fatalf("only %d error bodies collected", len(bodies))
	}
	outputs := map[string]string{"error bodies": strings.Join(bodies, "\n"), "logs": f.logs.String(), "metrics": metrics,
		"audit records": recordsJSON + "\n" + auditText.String()}
	for what, text := range outputs {
		all.WriteString(text)
		for _, c := range canaries {
			if containsCanary(text, c) {
				t.Errorf("%s contain the planted %q", what, c)
			}
		}
	}
	if !strings.Contains(f.logs.String(), "serve: POST decrypt 400 client=desk") {
		t.Errorf("logs: %s", f.logs.String())
	}
}

// containsCanary reports whether text holds canary c. The four digits of a
// last-4 search are matched only where no other digit or hex letter
// touches them: audit records are full of hashes and microsecond
// timestamps, in which any four digits turn up by chance, while a leaked
// value stands apart ("last4=7301", "555 7301").
func containsCanary(text, c string) bool {
	if len(c) > 4 {
		return strings.Contains(text, c)
	}
	isHex := func(b byte) bool {
		return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
	}
	for i := 0; ; {
		j := strings.Index(text[i:], c)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(c)
		if (start == 0 || !isHex(text[start-1])) && (end == len(text) || !isHex(text[end])) {
			return true
		}
		i = start + 1
	}
}

func TestContainsCanary(t *testing.T) {
	for text, want := range map[string]bool{
		"last4=7301": true, "+1 415 555 7301": true, `"7301"`: true, "7301": true,
		"2026-12-07T09:57:30.873012Z": false, "hash 9f7301ab": false, "no digits": false,
	} {
		if got := containsCanary(text, "7301"); got != want {
			t.Errorf("containsCanary(%q) = %v, want %v", text, got, want)
		}
	}
	if !containsCanary("x Qzcanaryname y", "Qzcanaryname") {
		t.Error("a long canary inside text")
	}
}
