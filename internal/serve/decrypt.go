package serve

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi"
)

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

// decrypt answers POST /v1/decrypt: DecryptAll as the client's role, one
// audit record committed with the request.
func (s *Server) decrypt(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	var out []pgphi.Plain
	var req DecryptRequest
	parse := func() *apiError {
		if aerr := decode(r, &req); aerr != nil {
			return aerr
		}
		st.table, st.column = req.Table, req.Column
		return s.rowsBound(len(req.Rows))
	}
	aerr := s.inClientTx(ctx, r, st, "serve decrypt", parse, func(ctx context.Context, tx pgx.Tx) *apiError {
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
