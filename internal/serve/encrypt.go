package serve

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/pgphi/pgphi"
)

// EncryptRequest is the body of POST /v1/encrypt.
type EncryptRequest struct {
	Table  string `json:"table"`
	Column string `json:"column"`
	Rows   []struct {
		Key   requestKey      `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"rows"`
}

// encrypt answers POST /v1/encrypt: SealAll, then the assignments of each
// value, encoded by hand.
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
