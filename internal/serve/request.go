package serve

import (
	"bytes"
	"context"
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
//
// parse reads the body between authentication and the role check, so that
// a refused client's record names the (protected) table and column it
// asked for.
func (s *Server) inClientTx(ctx context.Context, r *http.Request, st *reqState, command string, parse func() *apiError, fn func(ctx context.Context, tx pgx.Tx) *apiError) *apiError {
	tx, err := s.cfg.Pool.Begin(ctx)
	if err != nil {
		return protocolError(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if aerr := s.authenticate(ctx, r, tx, st, false); aerr != nil {
		return aerr
	}
	if aerr := parse(); aerr != nil {
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
