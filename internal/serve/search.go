package serve

import (
	"context"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi"
	"github.com/pgphi/pgphi/blindindex"
)

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

// search answers POST /v1/search: FindRows as the client's role, one audit
// record committed with the request.
func (s *Server) search(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	var found []pgphi.Found
	var req SearchRequest
	parse := func() *apiError {
		if aerr := decode(r, &req); aerr != nil {
			return aerr
		}
		st.table, st.column = req.Table, req.Column
		if len(req.Columns) > 64 {
			return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "a search reads at most 64 columns")
		}
		return nil
	}
	aerr := s.inClientTx(ctx, r, st, "serve search", parse, func(ctx context.Context, tx pgx.Tx) *apiError {
		if strings.TrimSpace(req.Reason) == "" {
			return errorf(http.StatusBadRequest, CodeBadRequest, "a reason is required to search (it is audited)")
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
