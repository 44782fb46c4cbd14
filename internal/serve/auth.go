package serve

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// client is an authenticated caller.
type client struct {
	name, role string
}

// credential is what a request presents: a token's hash, or a verified
// client certificate's subject CN.
type credential struct {
	hash []byte
	cn   string
}

// credentialOf reads the request's credential: a verified TLS client
// certificate wins over an Authorization header.
func credentialOf(r *http.Request) (credential, *apiError) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		if cn := r.TLS.VerifiedChains[0][0].Subject.CommonName; cn != "" {
			return credential{cn: cn}, nil
		}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return credential{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "authentication required: Authorization: Bearer TOKEN (pgphi serve token create), or a TLS client certificate")
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return credential{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "the Authorization header must be: Bearer TOKEN")
	}
	return credential{hash: TokenHash(strings.TrimSpace(token))}, nil
}

const lookupSQL = `SELECT name, db_role, COALESCE(token_sha256, ''::bytea) FROM pgphi.serve_clients
	WHERE revoked_at IS NULL AND (token_sha256 = $1 OR cert_cn = $2)`

// queryRower is a pool or a transaction.
type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// lookup finds the active client of cred. The index finds the row by the
// token's SHA-256, which an attacker cannot steer; the stored hash is then
// compared in constant time, so the answer does not depend on how much of
// a guessed hash matched.
func lookup(ctx context.Context, q queryRower, cred credential) (client, *apiError, error) {
	var c client
	var stored []byte
	var hash any
	var cn any
	if cred.hash != nil {
		hash = cred.hash
	}
	if cred.cn != "" {
		cn = cred.cn
	}
	err := q.QueryRow(ctx, lookupSQL, hash, cn).Scan(&c.name, &c.role, &stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, errorf(http.StatusUnauthorized, CodeUnauthorized, "unknown or revoked credentials"), nil
	}
	if err != nil {
		return c, nil, err
	}
	if cred.hash != nil && subtle.ConstantTimeCompare(stored, cred.hash) != 1 {
		return c, errorf(http.StatusUnauthorized, CodeUnauthorized, "unknown or revoked credentials"), nil
	}
	return c, nil, nil
}

// authCache remembers recent successful token lookups for the endpoints
// that reveal no value (encrypt, columns, flags), so that they cost no
// round trip of their own; decrypt and search always look the client up
// in their transaction. A revoked token therefore stops working at once
// for decrypt and search, and within ttl for the others.
type authCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[32]byte]cachedClient
}

type cachedClient struct {
	c       client
	expires time.Time
}

func (a *authCache) get(cred credential) (client, bool) {
	if a == nil || a.ttl <= 0 || cred.hash == nil {
		return client{}, false
	}
	k := [32]byte(cred.hash)
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.m[k]
	if !ok || time.Now().After(e.expires) {
		delete(a.m, k)
		return client{}, false
	}
	return e.c, true
}

func (a *authCache) put(cred credential, c client) {
	if a == nil || a.ttl <= 0 || cred.hash == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.m) > 10000 {
		clear(a.m) // bounded: tokens are few; an attacker's unknown tokens are never cached
	}
	a.m[[32]byte(cred.hash)] = cachedClient{c: c, expires: time.Now().Add(a.ttl)}
}

// accessSQL checks in one statement that the role set in the transaction
// may decrypt: a member of one of the groups $1, or a superuser when $2.
const accessSQL = `SELECT CASE WHEN r.rolsuper THEN $2::boolean
	ELSE EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = ANY($1::text[]) AND pg_catalog.pg_has_role(current_user, g.oid, 'MEMBER')) END
	FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

// actAs sets the client's role for the rest of tx (SET LOCAL ROLE). The
// server's login must be a member of the role.
func actAs(ctx context.Context, tx pgx.Tx, c client) *apiError {
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('role', $1, true)", c.role); err != nil {
		return errorf(http.StatusForbidden, CodeForbidden, "the server may not act as this client's database role (its login must be a member of the role)")
	}
	return nil
}
