package envelope_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/pgphi/pgphi/envelope"
)

// Fuzz targets of the ciphertext parser. Seeds are valid ciphertexts sealed
// with fixed nonces (so they are the same in every run and in
// testdata/fuzz/) and mutations of them; run one with
//
//	go test -run '^$' -fuzz FuzzOpen -fuzztime 60s ./envelope/

// Fixed column keys of the fuzz targets, by key id. fuzzBadKeyID's lookup
// returns a key of the wrong length; any other id is unknown.
const (
	fuzzKeyID    envelope.KeyID = 7
	fuzzKeyID2   envelope.KeyID = 0x01020304
	fuzzBadKeyID envelope.KeyID = 13
)

func fuzzKey(id envelope.KeyID) []byte {
	k := make([]byte, envelope.ColumnKeySize)
	for i := range k {
		k[i] = byte(id) ^ byte(i*31+5)
	}
	return k
}

var fuzzBinding = envelope.Binding{Table: "public.patient", Column: "last_name", PrimaryKey: []string{"42"}}

func fuzzLookup(id envelope.KeyID) ([]byte, error) {
	switch id {
	case fuzzKeyID, fuzzKeyID2:
		return fuzzKey(id), nil
	case fuzzBadKeyID:
		return make([]byte, 16), nil
	}
	return nil, envelope.ErrUnknownKey
}

// fuzzNonceAEAD is AES-256-GCM with a fixed nonce, laid out like
// cipher.NewGCMWithRandomNonce (nonce || ciphertext || tag): Seal with it
// yields exactly what Seal with a random nonce would have, had the random
// nonce been this one.
type fuzzNonceAEAD struct {
	gcm   cipher.AEAD
	nonce []byte
}

func (a fuzzNonceAEAD) NonceSize() int { return 0 }
func (a fuzzNonceAEAD) Overhead() int  { return len(a.nonce) + a.gcm.Overhead() }
func (a fuzzNonceAEAD) Seal(dst, _, plaintext, aad []byte) []byte {
	pt := bytes.Clone(plaintext) // Seal lays the plaintext out in dst's spare capacity
	return a.gcm.Seal(append(dst, a.nonce...), a.nonce, pt, aad)
}
func (a fuzzNonceAEAD) Open(dst, _, ciphertext, aad []byte) ([]byte, error) {
	panic("fuzzNonceAEAD only seals")
}

// fuzzSeal seals v under key id with the given 12-byte nonce.
func fuzzSeal(t testing.TB, id envelope.KeyID, nonce []byte, v envelope.Value, b envelope.Binding) []byte {
	t.Helper()
	block, err := aes.NewCipher(fuzzKey(id))
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	s := envelope.NewSealerWithAEAD(id, fuzzNonceAEAD{gcm: gcm, nonce: bytes.Clone(nonce)})
	ct, err := s.Seal(nil, v, b)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// fuzzSeeds returns valid ciphertexts (every value type, both keys, empty
// and long text) and mutations: truncations, a flipped bit in each part, a
// changed version, key id and type byte, and appended bytes.
func fuzzSeeds(t testing.TB) [][]byte {
	values := []envelope.Value{
		{Type: envelope.TypeText, Text: "Zoë O'Brien — 山田太郎 🩺"},
		{Type: envelope.TypeText, Text: ""},
		{Type: envelope.TypeInteger, Text: "-9223372036854775808"},
		{Type: envelope.TypeNumeric, Text: "12345.6700"},
		{Type: envelope.TypeBoolean, Text: "true"},
		{Type: envelope.TypeDate, Text: "2024-02-29"},
		{Type: envelope.TypeTimestamp, Text: "2024-02-29 13:45:30.5"},
		{Type: envelope.TypeTimestampTZ, Text: "2024-02-29 13:45:30.123456+00"},
		{Type: envelope.TypeJSON, Text: `{"b":1,  "a" : [1,2]}`},
		{Type: envelope.TypeJSONB, Text: `{"a": {"b": [1, 2, {"c": null}]}}`},
		{Type: envelope.TypeBytea, Text: `\x00ff10`},
		{Type: envelope.TypeOther, Text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{Type: envelope.TypeText, Text: strings.Repeat("long value ", 40)},
	}
	var seeds [][]byte
	for i, v := range values {
		id := fuzzKeyID
		if i%3 == 2 {
			id = fuzzKeyID2
		}
		nonce := bytes.Repeat([]byte{byte(i + 1)}, 12)
		seeds = append(seeds, fuzzSeal(t, id, nonce, v, fuzzBinding))
	}
	ct := seeds[0]
	mut := func(f func(b []byte) []byte) { seeds = append(seeds, f(bytes.Clone(ct))) }
	mut(func(b []byte) []byte { return b[:envelope.MinCiphertextSize-1] })
	mut(func(b []byte) []byte { return b[:envelope.MinCiphertextSize] })
	mut(func(b []byte) []byte { return b[:len(b)-1] })
	mut(func(b []byte) []byte { return append(b, 0) })
	mut(func(b []byte) []byte { b[0] = 0x02; return b })
	mut(func(b []byte) []byte { b[0] = 0x00; return b })
	mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[1:5], uint32(fuzzKeyID2)); return b })
	mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[1:5], uint32(fuzzBadKeyID)); return b })
	mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[1:5], 99); return b })
	mut(func(b []byte) []byte { b[5] ^= 0x01; return b })  // nonce
	mut(func(b []byte) []byte { b[17] ^= 0x80; return b }) // encrypted type byte
	mut(func(b []byte) []byte { b[len(b)-1] ^= 0x01; return b })
	// Authentic ciphertexts whose plaintext is not a valid value: an unknown
	// type byte, an empty plaintext and text that is not UTF-8.
	block, _ := aes.NewCipher(fuzzKey(fuzzKeyID))
	gcm, _ := cipher.NewGCM(block)
	s := envelope.NewSealerWithAEAD(fuzzKeyID, fuzzNonceAEAD{gcm: gcm, nonce: make([]byte, 12)})
	seeds = append(seeds,
		envelope.SealRaw(s, nil, 0x42, "x", fuzzBinding),
		envelope.SealRaw(s, nil, byte(envelope.TypeText), "\xff\xfe", fuzzBinding),
		[]byte{}, []byte{0x01}, []byte{0x01, 0, 0, 0, 7})
	return seeds
}

// FuzzParse: ParseHeader never panics, accepts exactly the inputs that start
// with version 1 and are long enough, and reports the header's key id.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct []byte) {
		version, id, err := envelope.ParseHeader(ct)
		if len(ct) > 0 && version != ct[0] {
			t.Fatalf("version = %#x, first byte %#x", version, ct[0])
		}
		wantOK := len(ct) >= envelope.MinCiphertextSize && ct[0] == envelope.Version1
		if wantOK != (err == nil) {
			t.Fatalf("ParseHeader(%x) error %v, want ok=%v", ct, err, wantOK)
		}
		if err != nil {
			if !errors.Is(err, envelope.ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		if want := envelope.KeyID(binary.BigEndian.Uint32(ct[1:5])); id != want {
			t.Fatalf("key id %d, header says %d", id, want)
		}
	})
}

// FuzzOpen: Open never panics and never returns unauthenticated data. A
// ciphertext that opens must be exactly what Seal produces for the returned
// value, the same binding and the ciphertext's own nonce; every failure is
// ErrFormat, ErrDecrypt or a key lookup error, and no error message contains
// the binding's key or the value.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	opener := envelope.NewOpener(fuzzLookup)
	f.Fuzz(func(t *testing.T, ct []byte) {
		orig := bytes.Clone(ct)
		v, err := opener.Open(ct, fuzzBinding)
		if !bytes.Equal(orig, ct) {
			t.Fatal("Open modified its input")
		}
		if err != nil {
			if v != (envelope.Value{}) {
				t.Fatalf("Open failed (%v) but returned a value", err)
			}
			_, id, herr := envelope.ParseHeader(ct)
			switch {
			case herr != nil:
				if !errors.Is(err, envelope.ErrFormat) {
					t.Fatalf("malformed header: error %v does not wrap ErrFormat", err)
				}
			case id != fuzzKeyID && id != fuzzKeyID2:
				if errors.Is(err, envelope.ErrDecrypt) {
					t.Fatalf("key id %d has no usable key, but error is ErrDecrypt", id)
				}
				if id != fuzzBadKeyID && !errors.Is(err, envelope.ErrUnknownKey) {
					t.Fatalf("unknown key id %d: error %v does not wrap ErrUnknownKey", id, err)
				}
			default:
				if !errors.Is(err, envelope.ErrDecrypt) && !errors.Is(err, envelope.ErrFormat) {
					t.Fatalf("error %v is neither ErrDecrypt nor ErrFormat", err)
				}
			}
			if msg := err.Error(); strings.Contains(msg, "patient") || strings.Contains(msg, "last_name") {
				t.Fatalf("error message names the binding: %q", msg)
			}
			return
		}
		// It opened: it must be the ciphertext Seal makes for this value,
		// binding and nonce (GCM: no other input authenticates).
		_, id, _ := envelope.ParseHeader(ct)
		again := fuzzSeal(t, id, ct[5:17], v, fuzzBinding)
		if !bytes.Equal(again, ct) {
			t.Fatalf("Open accepted %x, which Seal does not produce (Seal gives %x)", ct, again)
		}
		if len(ct) != len(v.Text)+1+envelope.Overhead {
			t.Fatalf("opened ciphertext of %d bytes for a %d-byte text", len(ct), len(v.Text))
		}
		// And it opens under no other binding.
		other := envelope.Binding{Table: fuzzBinding.Table, Column: fuzzBinding.Column, PrimaryKey: []string{"43"}}
		if _, err := opener.Open(ct, other); !errors.Is(err, envelope.ErrDecrypt) {
			t.Fatalf("ciphertext also opens under another primary key: %v", err)
		}
	})
}
