package serve

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/internal/redact"
)

// TokenPrefix starts every token, so that a leaked token is recognizable
// (secret scanners) and a token is never mistaken for another secret.
const TokenPrefix = "pgphi_"

// ErrClientName is returned for a client name that is not
// [a-z0-9][a-z0-9_.-]{0,62}.
var ErrClientName = errors.New("serve: a client name is 1-63 characters: lower-case letters, digits, _ . - (starting with a letter or digit)")

// ErrRole is returned when the client's role does not exist, and
// ErrClientExists when an active client has the name.
var (
	ErrRole         = errors.New("serve: no such database role")
	ErrClientExists = errors.New("serve: an active client has that name; revoke it first")
)

// createError turns the registration function's refusals into ErrRole and
// ErrClientExists.
func createError(name string, err error) error {
	switch sqlState(err) {
	case "42704":
		return fmt.Errorf("%w: client %s: %w", ErrRole, name, redact.Error(err))
	case "23505":
		return fmt.Errorf("%w: client %s", ErrClientExists, name)
	}
	return fmt.Errorf("serve: creating client %s: %w", name, redact.Error(err))
}

// ErrNoClient is returned by Revoke when no active client has the name.
var ErrNoClient = errors.New("serve: no active client of that name")

var clientName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// NewToken returns a new bearer token: TokenPrefix and 32 random bytes,
// base64url without padding.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// TokenHash is what pgphi.serve_clients stores of a token: SHA-256 of its
// text. A token is 256 random bits, so an unsalted fast hash is enough: a
// stolen hash cannot be turned back into a token.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateToken registers client name acting as role and returns its token,
// which is stored only as its hash: the caller shows it once. It runs
// pgphi.serve_client_create (dba group only) through pool.
func CreateToken(ctx context.Context, pool *pgxpool.Pool, name, role string) (string, error) {
	if !clientName.MatchString(name) {
		return "", ErrClientName
	}
	token := NewToken()
	if _, err := pool.Exec(ctx, "SELECT pgphi.serve_client_create($1, $2, $3, NULL)", name, role, TokenHash(token)); err != nil {
		return "", createError(name, err)
	}
	return token, nil
}

// CreateCertificateClient registers client name, authenticated by a TLS
// client certificate whose subject common name is cn, acting as role.
func CreateCertificateClient(ctx context.Context, pool *pgxpool.Pool, name, role, cn string) error {
	if !clientName.MatchString(name) {
		return ErrClientName
	}
	if strings.TrimSpace(cn) == "" || len(cn) > 255 {
		return errors.New("serve: a certificate subject CN is 1-255 characters")
	}
	if _, err := pool.Exec(ctx, "SELECT pgphi.serve_client_create($1, $2, NULL, $3)", name, role, cn); err != nil {
		return createError(name, err)
	}
	return nil
}

// Revoke revokes the active client name: its token or certificate stops
// working at the next request.
func Revoke(ctx context.Context, pool *pgxpool.Pool, name string) error {
	var found bool
	if err := pool.QueryRow(ctx, "SELECT pgphi.serve_client_revoke($1)", name).Scan(&found); err != nil {
		return fmt.Errorf("serve: revoking client %s: %w", name, redact.Error(err))
	}
	if !found {
		return ErrNoClient
	}
	return nil
}

// ClientInfo is a registered client, without its secret.
type ClientInfo struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Auth      string     `json:"auth"` // token or certificate
	CertCN    string     `json:"cert_cn,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
}

// List returns every client, active and revoked, oldest first.
func List(ctx context.Context, pool *pgxpool.Pool) ([]ClientInfo, error) {
	rows, err := pool.Query(ctx, `SELECT name, db_role, CASE WHEN token_sha256 IS NULL THEN 'certificate' ELSE 'token' END,
		COALESCE(cert_cn, ''), created_at, created_by, revoked_at, COALESCE(revoked_by, '')
		FROM pgphi.serve_clients ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("serve: listing clients: %w", redact.Error(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClientInfo, error) {
		var c ClientInfo
		err := r.Scan(&c.Name, &c.Role, &c.Auth, &c.CertCN, &c.CreatedAt, &c.CreatedBy, &c.RevokedAt, &c.RevokedBy)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("serve: listing clients: %w", redact.Error(err))
	}
	return out, nil
}
