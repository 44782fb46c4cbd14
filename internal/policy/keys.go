package policy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// LoadPrivateKey reads an approver's Ed25519 private key from path: either
// PKCS#8 in PEM ("-----BEGIN PRIVATE KEY-----", as written by
// MarshalPrivateKey or `openssl genpkey -algorithm ed25519`) or an
// unencrypted OpenSSH key ("-----BEGIN OPENSSH PRIVATE KEY-----", as written
// by `ssh-keygen -t ed25519 -N ""`). Passphrase-protected keys are refused
// with an error saying how to make an unencrypted copy. Errors name the file
// and never contain key material.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("private key %s: not a PEM or OpenSSH private key file", path)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("private key %s: not a valid PKCS#8 private key", path)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key %s: is a %s key; approvals need an Ed25519 key", path, keyKind(k))
		}
		return checkKey(path, ek)
	case "OPENSSH PRIVATE KEY":
		k, err := ssh.ParseRawPrivateKey(data)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("private key %s: is protected by a passphrase; pgphi reads unencrypted keys only: "+
				"make an unencrypted copy readable only by you (cp KEY COPY && chmod 600 COPY && ssh-keygen -p -N '' -f COPY) and pass that", path)
		}
		if err != nil {
			return nil, fmt.Errorf("private key %s: not a valid OpenSSH private key", path)
		}
		switch ek := k.(type) {
		case *ed25519.PrivateKey:
			return checkKey(path, *ek)
		case ed25519.PrivateKey:
			return checkKey(path, ek)
		default:
			return nil, fmt.Errorf("private key %s: is a %s key; approvals need an Ed25519 key (ssh-keygen -t ed25519)", path, keyKind(k))
		}
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("private key %s: is an encrypted PKCS#8 key; pgphi reads unencrypted keys only: "+
			"make an unencrypted copy readable only by you (openssl pkey -in KEY -out COPY) and pass that", path)
	default:
		return nil, fmt.Errorf("private key %s: PEM block `%s` is not supported; use a PKCS#8 (\"PRIVATE KEY\") or OpenSSH Ed25519 private key", path, block.Type)
	}
}

func checkKey(path string, k ed25519.PrivateKey) (ed25519.PrivateKey, error) {
	if len(k) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("private key %s: malformed Ed25519 key", path)
	}
	// The public half stored in the key must be the one its seed derives.
	if !bytes.Equal(ed25519.NewKeyFromSeed(k.Seed())[32:], k[32:]) {
		return nil, fmt.Errorf("private key %s: inconsistent Ed25519 key (public half does not match)", path)
	}
	return k, nil
}

func keyKind(k any) string {
	name := fmt.Sprintf("%T", k)
	switch {
	case strings.Contains(name, "rsa"):
		return "RSA"
	case strings.Contains(name, "ecdsa"):
		return "ECDSA"
	case strings.Contains(name, "ecdh"):
		return "X25519/ECDH"
	case strings.Contains(name, "dsa"):
		return "DSA"
	}
	return "non-Ed25519"
}

// MarshalPrivateKey encodes key as PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"),
// the format LoadPrivateKey reads. Write it with file mode 0600.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// AuthorizedKey renders pub in authorized_keys form, "ssh-ed25519 AAAA...",
// as used in the signers file.
func AuthorizedKey(pub ed25519.PublicKey) string {
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// Fingerprint returns pub's SHA-256 fingerprint as `ssh-keygen -l` prints
// it: "SHA256:" and the unpadded base64 of SHA-256 over the SSH wire form of
// the key. It returns "" for a malformed key.
func Fingerprint(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return ""
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(k)
}
