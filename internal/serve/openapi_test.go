package serve_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgphi/pgphi/internal/serve"
)

// The server answers every path, method and status docs/openapi.yaml
// documents, with a body of the documented shape; and nothing the server
// routes is undocumented.
func TestOpenAPIDescribesTheServer(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi version %v", doc["openapi"])
	}
	f := newFixture(t, func(c *serve.Config) { c.Rate, c.Burst, c.MaxRows = 0.001, 5, 10 })
	n := 0
	token := func(role string) string {
		n++
		return f.token(t, fmt.Sprintf("c%d", n), role)
	}
	ha, ao := f.actors.HealthcareAdmin, f.actors.AuditOfficer
	spent := func(role string) string {
		tok := token(role)
		for range 5 {
			f.call(t, "GET", "/v1/flags", tok, nil)
		}
		return tok
	}
	row := func() map[string]any { return map[string]any{"key": map[string]string{"uid": "P1"}, "value": "Smith"} }
	var eleven []any
	for range 11 {
		eleven = append(eleven, row())
	}
	var ct string
	{
		_, body, _ := f.call(t, "POST", "/v1/encrypt", token(ha), map[string]any{"table": "patient", "column": "last_name", "rows": []any{row()}})
		ct = body["rows"].([]any)[0].(map[string]any)["ciphertext"].(string)
	}
	dec := func(reason string) map[string]any {
		return map[string]any{"table": "patient", "column": "last_name", "reason": reason,
			"rows": []any{map[string]any{"key": map[string]string{"uid": "P1"}, "ciphertext": ct}, map[string]any{"key": map[string]string{"uid": "P2"}, "ciphertext": nil}}}
	}
	srch := func(cols []string) map[string]any {
		return map[string]any{"table": "patient", "column": "last_name", "kind": "phonetic", "value": "smyth", "reason": "r", "columns": cols}
	}
	var many []string
	for i := range 65 {
		many = append(many, strconv.Itoa(i))
	}
	type scenario struct {
		token string
		body  any
	}
	scenarios := map[string]func() scenario{
		"post /v1/encrypt 200": func() scenario {
			return scenario{token(f.actors.AppWriter), map[string]any{"table": "patient", "column": "last_name", "rows": []any{row(), map[string]any{"key": map[string]string{"uid": "P3"}, "value": nil}}}}
		},
		"post /v1/encrypt 400": func() scenario {
			return scenario{token(ha), map[string]any{"table": "patient", "column": "uid", "rows": []any{row()}}}
		},
		"post /v1/encrypt 401": func() scenario { return scenario{"", map[string]any{}} },
		"post /v1/encrypt 413": func() scenario {
			return scenario{token(ha), map[string]any{"table": "patient", "column": "last_name", "rows": eleven}}
		},
		"post /v1/encrypt 429": func() scenario { return scenario{spent(ha), map[string]any{}} },
		"post /v1/decrypt 200": func() scenario { return scenario{token(ha), dec("chart")} },
		"post /v1/decrypt 400": func() scenario { return scenario{token(ha), dec("")} },
		"post /v1/decrypt 401": func() scenario { return scenario{"pgphi_x", dec("chart")} },
		"post /v1/decrypt 403": func() scenario { return scenario{token(ao), dec("chart")} },
		"post /v1/decrypt 413": func() scenario {
			return scenario{token(ha), []byte(`{"pad":"` + strings.Repeat("x", serve.DefaultMaxBody) + `"}`)}
		},
		"post /v1/decrypt 429": func() scenario { return scenario{spent(ha), dec("chart")} },
		"post /v1/search 200":  func() scenario { return scenario{token(ha), srch([]string{"last_name", "phone"})} },
		"post /v1/search 400": func() scenario {
			return scenario{token(ha), map[string]any{"table": "patient", "column": "last_name", "kind": "soundex", "value": "x", "reason": "r"}}
		},
		"post /v1/search 401": func() scenario { return scenario{"", srch(nil)} },
		"post /v1/search 403": func() scenario { return scenario{token(f.actors.AppWriter), srch(nil)} },
		"post /v1/search 413": func() scenario { return scenario{token(ha), srch(many)} },
		"post /v1/search 429": func() scenario { return scenario{spent(ha), srch(nil)} },
		"get /v1/columns 200": func() scenario { return scenario{token(ao), nil} },
		"get /v1/columns 401": func() scenario { return scenario{"", nil} },
		"get /v1/columns 429": func() scenario { return scenario{spent(ao), nil} },
		"get /v1/flags 200":   func() scenario { return scenario{token(ao), nil} },
		"get /v1/flags 401":   func() scenario { return scenario{"", nil} },
		"get /v1/flags 429":   func() scenario { return scenario{spent(ao), nil} },
		"get /healthz 200":    func() scenario { return scenario{"", nil} },
	}
	paths := doc["paths"].(map[string]any)
	documented := map[string]bool{}
	for path, ops := range paths {
		for method, op := range ops.(map[string]any) {
			for status, resp := range op.(map[string]any)["responses"].(map[string]any) {
				key := method + " " + path + " " + status
				documented[key] = true
				if key == "get /healthz 503" {
					continue // below, with the database gone
				}
				mk, ok := scenarios[key]
				if !ok {
					t.Errorf("%s is documented but not tested", key)
					continue
				}
				sc := mk()
				got, body, rawBody := f.call(t, strings.ToUpper(method), path, sc.token, sc.body)
				if strconv.Itoa(got) != status {
					t.Errorf("%s: answered %d: %s", key, got, rawBody)
					continue
				}
				schema := responseSchema(t, doc, resp)
				if err := validate(doc, schema, body, "body"); err != nil {
					t.Errorf("%s: %v: %s", key, err, rawBody)
				}
			}
		}
	}
	for key := range scenarios {
		if !documented[key] {
			t.Errorf("%s is tested but not documented", key)
		}
	}
	// Every route of the server is documented.
	for _, p := range []string{"/v1/encrypt", "/v1/decrypt", "/v1/search", "/v1/columns", "/v1/flags", "/healthz"} {
		if paths[p] == nil {
			t.Errorf("%s is not documented", p)
		}
	}
	// Unknown paths and wrong methods answer the error body too.
	for _, c := range []struct{ method, path, code string }{{"GET", "/v1/nothing", "not_found"}, {"GET", "/v1/encrypt", "method_not_allowed"}} {
		_, body, raw := f.call(t, c.method, c.path, "", nil)
		if err := validate(doc, map[string]any{"$ref": "#/components/schemas/Error"}, body, "body"); err != nil || body["error"].(map[string]any)["code"] != c.code {
			t.Errorf("%s %s: %v %s", c.method, c.path, err, raw)
		}
	}
	// 503: the database is gone.
	f.srvPool.Close()
	got, body, raw := f.call(t, "GET", "/healthz", "", nil)
	if got != 503 {
		t.Fatalf("healthz without a database: %d %s", got, raw)
	}
	if err := validate(doc, responseSchema(t, doc, paths["/healthz"].(map[string]any)["get"].(map[string]any)["responses"].(map[string]any)["503"]), body, "body"); err != nil {
		t.Error(err)
	}
	_ = context.Background
}

// responseSchema is the application/json schema of a response object.
func responseSchema(t *testing.T, doc map[string]any, resp any) any {
	t.Helper()
	r := resolve(doc, resp).(map[string]any)
	return r["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
}

func resolve(doc map[string]any, v any) any {
	for {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return v
		}
		var cur any = doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		v = cur
	}
}

// validate checks v against the subset of OpenAPI 3.0 schemas the document
// uses: type, nullable, required, properties, additionalProperties, items,
// enum, pattern, minimum.
func validate(doc map[string]any, schema, v any, where string) error {
	s, _ := resolve(doc, schema).(map[string]any)
	if s == nil {
		return nil
	}
	if v == nil {
		if nullable, _ := s["nullable"].(bool); nullable || s["type"] == nil {
			return nil
		}
		return fmt.Errorf("%s is null", where)
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		return fmt.Errorf("%s = %v is not one of %v", where, v, enum)
	}
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s is not an object", where)
		}
		for _, r := range asList(s["required"]) {
			if _, ok := m[r.(string)]; !ok {
				return fmt.Errorf("%s lacks %s", where, r)
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, val := range m {
			if ps, ok := props[k]; ok {
				if err := validate(doc, ps, val, where+"."+k); err != nil {
					return err
				}
			} else if ap, ok := s["additionalProperties"]; ok {
				if ap == false {
					return fmt.Errorf("%s has %s, not documented", where, k)
				}
				if err := validate(doc, ap, val, where+"."+k); err != nil {
					return err
				}
			} else if props != nil {
				return fmt.Errorf("%s has %s, not documented", where, k)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s is not an array", where)
		}
		for i, e := range a {
			if err := validate(doc, s["items"], e, fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s is not a string", where)
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			return fmt.Errorf("%s does not match %s", where, p)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s is not a boolean", where)
		}
	case "integer", "number":
		if _, ok := v.(float64); !ok {
			return fmt.Errorf("%s is not a number", where)
		}
	}
	return nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
