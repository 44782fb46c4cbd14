package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/blindindex"
	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/policy"
	"github.com/pgphi/pgphi/internal/redact"
	"github.com/pgphi/pgphi/internal/search"
)

// decode reads the request body into v: 413 past the size bound, 400 for
// anything that is not the expected JSON. Messages never quote the body.
func decode(r *http.Request, v any) *apiError {
	body, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit))
	}
	if err != nil {
		return errorf(http.StatusBadRequest, CodeBadRequest, "the request body could not be read")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return errorf(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("the request body is not valid JSON (at byte %d)", se.Offset))
		case errors.As(err, &te):
			return errorf(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("field %s must be a JSON %s", te.Field, jsonKind(te.Type.Kind().String())))
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return errorf(http.StatusBadRequest, CodeBadRequest, "the request body has a field this endpoint does not take (see docs/openapi.yaml)")
		}
		return errorf(http.StatusBadRequest, CodeBadRequest, "the request body is not the JSON object this endpoint takes")
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, CodeBadRequest, "the request body has data after its JSON object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice":
		return "array"
	case "map", "struct":
		return "object"
	case "int", "int64", "float64":
		return "number"
	}
	return "value of another type"
}

// requestKey is a row key as JSON gives it: canonical text of each key
// column, as a string (or a number, taken as its text).
type requestKey map[string]any

func (k requestKey) key() (pgphi.Key, *apiError) {
	out := pgphi.Key{}
	for name, v := range k {
		switch v := v.(type) {
		case string:
			out[name] = v
		case json.Number:
			out[name] = v.String()
		default:
			return nil, errorf(http.StatusBadRequest, CodeBadRequest, "a key's values must be strings (the canonical text of each key column)")
		}
	}
	return out, nil
}

// value turns a JSON value into what pgphi.Seal takes: null, a string
// (canonical text), a boolean, an integer, other numbers as their text,
// objects and arrays as JSON (json and jsonb columns).
func value(raw json.RawMessage) (any, *apiError) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil, nil
	}
	switch t[0] {
	case '"':
		var s string
		if json.Unmarshal(t, &s) != nil {
			return nil, errorf(http.StatusBadRequest, CodeBadRequest, "a value is not a valid JSON string")
		}
		return s, nil
	case 't', 'f':
		return t[0] == 't', nil
	case '{', '[':
		return json.RawMessage(t), nil
	}
	s := string(t)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	return s, nil
}

func protocolError(err error) *apiError {
	switch {
	case errors.Is(err, pgphi.ErrReason):
		return errorf(http.StatusBadRequest, CodeBadRequest, "a reason is required (it is audited)")
	case errors.Is(err, pgphi.ErrNotAudited):
		return errorf(http.StatusForbidden, CodeForbidden, "this client's role may not write audit records, so it may not decrypt")
	case errors.Is(err, pgphi.ErrNotProtected), errors.Is(err, pgphi.ErrKey), errors.Is(err, pgphi.ErrValue),
		errors.Is(err, pgphi.ErrRestoring), errors.Is(err, search.ErrNotSearchable),
		errors.Is(err, blindindex.ErrInvalidQuery), errors.Is(err, blindindex.ErrNotConfigured),
		// a ciphertext that does not open for this row and column: the
		// caller's mistake; the message names its position, not its bytes
		errors.Is(err, envelope.ErrDecrypt), errors.Is(err, envelope.ErrFormat), errors.Is(err, envelope.ErrUnknownKey):
		return errorf(http.StatusBadRequest, CodeBadRequest, redact.Error(err).Error())
	}
	switch sqlState(err) {
	case "42501":
		return errorf(http.StatusForbidden, CodeForbidden, "the client's database role lacks a privilege this request needs")
	case "57014":
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the request was cancelled")
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the request was cancelled")
	}
	return errorf(http.StatusInternalServerError, CodeInternal, redact.Error(err).Error())
}

// authenticate identifies the caller and takes one token of its rate. With
// cached, a recent lookup of the same token is used (endpoints that reveal
// no value); otherwise q looks it up (the request's transaction).
func (s *Server) authenticate(ctx context.Context, r *http.Request, q queryRower, st *reqState, cached bool) *apiError {
	cred, aerr := credentialOf(r)
	if aerr != nil {
		return aerr
	}
	c, ok := client{}, false
	if cached {
		c, ok = s.auth.get(cred)
	}
	if !ok {
		var err error
		c, aerr, err = lookup(ctx, q, cred)
		if err != nil {
			return protocolError(err)
		}
		if aerr != nil {
			return aerr
		}
		s.auth.put(cred, c)
	}
	st.client = c
	if !s.limit.allow(c.name) {
		return errorf(http.StatusTooManyRequests, CodeRateLimited, "too many requests from this client; slow down")
	}
	return nil
}

// inClientTx authenticates the caller, then runs fn in a transaction as
// the client's role, allowed for command; fn's work and its audit record
// commit together.
func (s *Server) inClientTx(ctx context.Context, r *http.Request, st *reqState, command string, fn func(ctx context.Context, tx pgx.Tx) *apiError) *apiError {
	tx, err := s.cfg.Pool.Begin(ctx)
	if err != nil {
		return protocolError(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if aerr := s.authenticate(ctx, r, tx, st, false); aerr != nil {
		return aerr
	}
	if aerr := actAs(ctx, tx, st.client); aerr != nil {
		return aerr
	}
	// policy.CheckAccess's rule (membership of a group allowed for the
	// command; a superuser only when pinned allow_superuser), in one
	// statement.
	var groups []string
	for _, role := range policy.Allowed(command) {
		groups = append(groups, s.cfg.Names.Group(role))
	}
	var ok bool
	if err := tx.QueryRow(ctx, accessSQL, groups, s.cfg.AllowSuperuser).Scan(&ok); err != nil {
		return protocolError(err)
	}
	if !ok {
		return errorf(http.StatusForbidden, CodeForbidden, fmt.Sprintf("this client's role may not %s: it needs membership of %s",
			strings.TrimPrefix(command, "serve "), strings.Join(groups, " or ")))
	}
	if aerr := fn(pgphi.Within(ctx, tx, st.client.name), tx); aerr != nil {
		return aerr
	}
	if err := tx.Commit(ctx); err != nil {
		return protocolError(err)
	}
	return nil
}

// EncryptRequest is the body of POST /v1/encrypt.
type EncryptRequest struct {
	Table  string `json:"table"`
	Column string `json:"column"`
	Rows   []struct {
		Key   requestKey      `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"rows"`
}

func (s *Server) encrypt(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	if aerr := s.authenticate(ctx, r, s.cfg.Pool, st, true); aerr != nil {
		return nil, aerr
	}
	var req EncryptRequest
	if aerr := decode(r, &req); aerr != nil {
		return nil, aerr
	}
	st.table, st.column = req.Table, req.Column
	if aerr := s.rowsBound(len(req.Rows)); aerr != nil {
		return nil, aerr
	}
	in := make([]pgphi.Unsealed, len(req.Rows))
	for i, row := range req.Rows {
		k, aerr := row.Key.key()
		if aerr != nil {
			return nil, aerr
		}
		v, aerr := value(row.Value)
		if aerr != nil {
			return nil, aerr
		}
		in[i] = pgphi.Unsealed{Key: k, Value: v}
	}
	out, err := s.cfg.Client.SealAll(ctx, req.Table, req.Column, in)
	if err != nil {
		return nil, protocolError(err)
	}
	col, err := s.cfg.Client.Column(req.Table, req.Column)
	if err != nil {
		return nil, protocolError(err)
	}
	st.values = len(out)
	return encryptResponse(out, col.Encrypted, col.Index), nil
}

// rawJSON is an answer already encoded.
type rawJSON []byte

// encryptResponse encodes the answer of /v1/encrypt by hand: it is most of
// what the server does per value (ciphertext and terms, each twice).
func encryptResponse(out []pgphi.Assignments, enc, idx string) rawJSON {
	b := make([]byte, 0, 64+len(out)*1024)
	b = append(b, `{"rows":[`...)
	for i, a := range out {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ciphertext":`...)
		b = appendValue(b, a[enc])
		b = append(b, `,"terms":`...)
		if idx != "" {
			b = appendValue(b, a[idx])
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"assignments":{`...)
		for j, name := range a.Columns() {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, name)
			b = append(b, ':')
			b = appendValue(b, a[name])
		}
		b = append(b, "}}"...)
	}
	return append(b, "]}\n"...)
}

// appendValue encodes an assignment: bytes as base64, terms as decimal
// strings, canonical text as a string, nil as null.
func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case []byte:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v)
		return append(b, '"')
	case []int64:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, t := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = strconv.AppendInt(b, t, 10)
			b = append(b, '"')
		}
		return append(b, ']')
	case string:
		return appendString(b, v)
	}
	raw, _ := json.Marshal(v)
	return append(b, raw...)
}

func appendString(b []byte, s string) []byte {
	raw, _ := json.Marshal(s)
	return append(b, raw...)
}

func (s *Server) rowsBound(n int) *apiError {
	if n > s.cfg.MaxRows {
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("a request takes at most %d rows", s.cfg.MaxRows))
	}
	return nil
}

// DecryptRequest is the body of POST /v1/decrypt.
type DecryptRequest struct {
	Table  string `json:"table"`
	Column string `json:"column"`
	Reason string `json:"reason"`
	Rows   []struct {
		Key        requestKey `json:"key"`
		Ciphertext *string    `json:"ciphertext"` // base64; null: SQL NULL
	} `json:"rows"`
}

func (s *Server) decrypt(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	var out []pgphi.Plain
	aerr := s.inClientTx(ctx, r, st, "serve decrypt", func(ctx context.Context, tx pgx.Tx) *apiError {
		var req DecryptRequest
		if aerr := decode(r, &req); aerr != nil {
			return aerr
		}
		st.table, st.column = req.Table, req.Column
		if aerr := s.rowsBound(len(req.Rows)); aerr != nil {
			return aerr
		}
		if strings.TrimSpace(req.Reason) == "" {
			return errorf(http.StatusBadRequest, CodeBadRequest, "a reason is required to decrypt (it is audited)")
		}
		in := make([]pgphi.Sealed, len(req.Rows))
		for i, row := range req.Rows {
			k, aerr := row.Key.key()
			if aerr != nil {
				return aerr
			}
			in[i].Key = k
			if row.Ciphertext != nil {
				b, err := base64.StdEncoding.DecodeString(*row.Ciphertext)
				if err != nil {
					return errorf(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("row %d: the ciphertext is not base64", i+1))
				}
				in[i].Ciphertext = b
			}
		}
		var err error
		if out, err = s.cfg.Client.DecryptAll(ctx, req.Table, req.Column, req.Reason, in); err != nil {
			return protocolError(err)
		}
		return nil
	})
	if aerr != nil {
		return nil, aerr
	}
	rows := make([]map[string]*string, len(out))
	for i, p := range out {
		if p.Null {
			rows[i] = map[string]*string{"value": nil}
		} else {
			t := p.Text
			rows[i] = map[string]*string{"value": &t}
		}
	}
	st.values = len(rows)
	return map[string]any{"rows": rows}, nil
}

// SearchRequest is the body of POST /v1/search.
type SearchRequest struct {
	Table   string   `json:"table"`
	Column  string   `json:"column"`
	Kind    string   `json:"kind"`
	Value   string   `json:"value"`
	MinAge  *int     `json:"min_age"`
	MaxAge  *int     `json:"max_age"`
	Reason  string   `json:"reason"`
	Columns []string `json:"columns"`
}

var queryKinds = []blindindex.QueryKind{blindindex.QExact, blindindex.QPrefix, blindindex.QContains, blindindex.QPhonetic,
	blindindex.QPhone, blindindex.QLast4, blindindex.QAreaCode, blindindex.QDate, blindindex.QYear, blindindex.QYearMonth, blindindex.QAgeBetween}

func (s *Server) search(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	var found []pgphi.Found
	aerr := s.inClientTx(ctx, r, st, "serve search", func(ctx context.Context, tx pgx.Tx) *apiError {
		var req SearchRequest
		if aerr := decode(r, &req); aerr != nil {
			return aerr
		}
		st.table, st.column = req.Table, req.Column
		if strings.TrimSpace(req.Reason) == "" {
			return errorf(http.StatusBadRequest, CodeBadRequest, "a reason is required to search (it is audited)")
		}
		if len(req.Columns) > 64 {
			return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "a search reads at most 64 columns")
		}
		q := pgphi.Query{Kind: blindindex.QueryKind(req.Kind), Value: req.Value}
		known := false
		for _, k := range queryKinds {
			known = known || k == q.Kind
		}
		if !known {
			return errorf(http.StatusBadRequest, CodeBadRequest, "kind must be one of exact, prefix, contains, phonetic, phone, last4, area-code, date, year, year-month, age-between")
		}
		if q.Kind == blindindex.QAgeBetween {
			if req.MinAge == nil || req.MaxAge == nil || *req.MinAge < 0 || *req.MaxAge < *req.MinAge {
				return errorf(http.StatusBadRequest, CodeBadRequest, "age-between needs min_age and max_age, whole numbers with 0 <= min_age <= max_age")
			}
			q.MinAge, q.MaxAge = *req.MinAge, *req.MaxAge
		} else if req.Value == "" {
			return errorf(http.StatusBadRequest, CodeBadRequest, "value is required for kind "+req.Kind)
		}
		var err error
		if found, err = s.cfg.Client.FindRows(ctx, req.Table, req.Column, q, req.Columns, req.Reason); err != nil {
			return protocolError(err)
		}
		return nil
	})
	if aerr != nil {
		return nil, aerr
	}
	keys := make([]pgphi.Key, len(found))
	rows := make([]map[string]*string, len(found))
	for i, f := range found {
		keys[i] = f.Key
		rows[i] = map[string]*string{}
		for col, p := range f.Values {
			if p.Null {
				rows[i][col] = nil
			} else {
				t := p.Text
				rows[i][col] = &t
			}
		}
	}
	st.values = len(found)
	return map[string]any{"keys": keys, "rows": rows}, nil
}

func (s *Server) columns(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	if aerr := s.authenticate(ctx, r, s.cfg.Pool, st, true); aerr != nil {
		return nil, aerr
	}
	cols, err := s.cfg.Client.Columns(ctx)
	if err != nil {
		return nil, protocolError(err)
	}
	if cols == nil {
		cols = []pgphi.Column{}
	}
	return map[string]any{"columns": cols}, nil
}

func (s *Server) flags(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	if aerr := s.authenticate(ctx, r, s.cfg.Pool, st, true); aerr != nil {
		return nil, aerr
	}
	f, err := s.cfg.Client.Flags(ctx)
	if err != nil {
		return nil, protocolError(err)
	}
	return map[string]any{"flags": f}, nil
}

func (s *Server) healthz(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	if err := s.cfg.Pool.Ping(ctx); err != nil {
		return nil, errorf(http.StatusServiceUnavailable, CodeUnavailable, "the database does not answer")
	}
	return map[string]string{"status": "ok"}, nil
}
