//go:build cgo

package keys

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgphi/pgphi/envelope"
	"github.com/pgphi/pgphi/internal/pgtest"
	"github.com/pgphi/pgphi/internal/state"
)

func rewrapDB(t *testing.T) (context.Context, *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := state.Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	return ctx, pool
}

// sealWith seals one value under every key id of ring by sealing with the
// active key; openAll checks another ring opens it.
func sealWith(t *testing.T, ring *Keyring) []byte {
	t.Helper()
	s, err := ring.Sealer("public.patient", "ssn")
	if err != nil {
		t.Fatal(err)
	}
	ct, err := s.Seal(nil, envelope.Value{Type: envelope.TypeText, Text: "123-45-6789"}, envelope.Binding{Table: "public.patient", Column: "ssn", PrimaryKey: []string{"1"}})
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func opens(t *testing.T, ring *Keyring, ct []byte) {
	t.Helper()
	v, err := ring.Opener("public.patient", "ssn").Open(ct, envelope.Binding{Table: "public.patient", Column: "ssn", PrimaryKey: []string{"1"}})
	if err != nil || v.Text != "123-45-6789" {
		t.Fatalf("the rewrapped keys do not open a value sealed before: %v", err)
	}
}

// TestRewrapAcrossProviders moves the data keys from a passphrase to a
// PKCS#11 token (the token's RFC 5649 key wrap) and on to a token key with
// AES-GCM, then to a new passphrase: each step keeps the data keys (values
// sealed before still open), and the previous KEK no longer loads them.
func TestRewrapAcrossProviders(t *testing.T) {
	ctx, pool := rewrapDB(t)
	tok := newSoftToken(t)
	tok.generateKEK(t, "kek-wrap")
	tok.generateKEK(t, "kek-gcm")
	oldPass := PassphraseProvider("old passphrase")
	if _, err := Init(ctx, pool, oldPass); err != nil {
		t.Fatal(err)
	}
	if _, err := Rotate(ctx, pool, oldPass); err != nil {
		t.Fatal(err)
	}
	ring, err := Load(ctx, pool, oldPass)
	if err != nil {
		t.Fatal(err)
	}
	ct := sealWith(t, ring)

	steps := []struct {
		name string
		to   KEKProvider
		mech string
	}{
		{"passphrase to token key wrap", tok.provider(t, "kek-wrap", ""), ""},
		{"token key wrap to token GCM", tok.provider(t, "kek-gcm", "gcm"), MechGCM},
		{"token GCM to a new passphrase", PassphraseProvider("new passphrase"), ""},
	}
	from := oldPass
	for _, st := range steps {
		res, err := Rewrap(ctx, pool, from, st.to)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if res.Keys != 2 || res.To != st.to.Name() || (st.mech != "" && res.Mechanism != st.mech) {
			t.Fatalf("%s: %+v", st.name, res)
		}
		if st.to.Name() == KindPKCS11 && st.mech == "" && res.Mechanism != MechKWP && res.Mechanism != MechKeyWrapPad {
			t.Fatalf("%s: chose %s, want RFC 5649 key wrap", st.name, res.Mechanism)
		}
		ring, err := Load(ctx, pool, st.to)
		if err != nil {
			t.Fatalf("%s: the new KEK does not load the keys: %v", st.name, err)
		}
		opens(t, ring, ct)
		if _, err := Load(ctx, pool, from); err == nil {
			t.Fatalf("%s: the old KEK still loads the keys", st.name)
		}
		from = st.to
	}
	// Same kind, other secret: the old passphrase is a wrong KEK.
	if _, err := Rewrap(ctx, pool, from, PassphraseProvider("newest passphrase")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, pool, from); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("the previous passphrase: %v, want ErrWrongKEK", err)
	}
	// A wrong current KEK changes nothing.
	var before []byte
	pool.QueryRow(ctx, "SELECT wrapped FROM pgphi.data_keys WHERE key_id = 1").Scan(&before)
	if _, err := Rewrap(ctx, pool, PassphraseProvider("not it"), PassphraseProvider("x")); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("rewrap with a wrong current KEK: %v", err)
	}
	var after []byte
	pool.QueryRow(ctx, "SELECT wrapped FROM pgphi.data_keys WHERE key_id = 1").Scan(&after)
	if !bytes.Equal(before, after) {
		t.Fatal("a failed rewrap changed a wrapped key")
	}
}

// TestSecretKeyWrapInToken: a backup's key wrapped by a token KEK unwraps
// only there and only as a secret key (key id 0), not as a data key.
func TestSecretKeyWrapInToken(t *testing.T) {
	tok := newSoftToken(t)
	tok.generateKEK(t, "kek")
	for _, mech := range []string{"", "gcm"} {
		p := tok.provider(t, "kek", mech)
		params, err := p.NewParams()
		if err != nil {
			t.Fatal(err)
		}
		key, _ := GenerateDataKey()
		w, err := WrapSecretKey(p, params, key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnwrapSecretKey(p, params, w)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: %v", params.Mechanism, err)
		}
		if _, err := p.UnwrapKey(params, 1, w); !errors.Is(err, ErrWrongKEK) {
			t.Fatalf("%s: a secret key unwrapped as data key 1: %v", params.Mechanism, err)
		}
		if _, err := UnwrapSecretKey(PassphraseProvider("p"), params, w); err == nil {
			t.Fatalf("%s: a passphrase unwrapped a token-wrapped key", params.Mechanism)
		}
	}
}
