package serve

import (
	"context"
	"net/http"

	"github.com/pgphi/pgphi"
)

// GET /v1/columns, /v1/flags and /healthz: what is protected and how, the
// cutover flags, liveness. None reveals a value.

// columns answers GET /v1/columns.
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

// flags answers GET /v1/flags.
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

// healthz answers GET /healthz without a credential: the database answers.
func (s *Server) healthz(ctx context.Context, r *http.Request, st *reqState) (any, *apiError) {
	if err := s.cfg.Pool.Ping(ctx); err != nil {
		return nil, errorf(http.StatusServiceUnavailable, CodeUnavailable, "the database does not answer")
	}
	return map[string]string{"status": "ok"}, nil
}
