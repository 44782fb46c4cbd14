package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgphi/pgphi/internal/redact"
)

// Checkpoint is a signed statement "the audit log's record Seq has hash
// Hash", made at Time with the Ed25519 key whose fingerprint is
// KeyFingerprint. An auditor keeps a copy (its JSON form) outside the
// database; ProveExtends later shows the log still contains that record,
// unchanged, and only grew after it.
type Checkpoint struct {
	Seq            int64     `json:"seq"`
	Hash           string    `json:"hash"`
	Time           time.Time `json:"time"`
	KeyFingerprint string    `json:"key_fingerprint"` // "SHA256:..." as `ssh-keygen -l` prints it
	Signature      string    `json:"signature"`       // base64 (standard, padded) of the 64-byte signature
}

// ErrEmpty is returned (or wrapped) when there is nothing to sign or archive.
var ErrEmpty = errors.New("audit: no audit records")

// ErrBadCheckpoint is wrapped by VerifyCheckpoint's errors.
var ErrBadCheckpoint = errors.New("audit: checkpoint signature is not valid")

// checkpointMessage is what is signed (FORMAT.md, "Checkpoints").
func checkpointMessage(seq int64, hash string, t time.Time, fingerprint string) []byte {
	return fmt.Appendf(nil, "pgphi-audit-checkpoint-v1\nseq %d\nhash %s\ntime %s\nkey %s\n",
		seq, hash, t.UTC().Format(TimeLayout), fingerprint)
}

// Fingerprint returns pub's SHA-256 fingerprint as `ssh-keygen -l` prints it
// for the same key in OpenSSH form: "SHA256:" and the unpadded base64 of
// SHA-256 over the key's SSH wire encoding. It is "" for a malformed key.
func Fingerprint(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return ""
	}
	sum := sha256.Sum256(sshWire(pub))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

func sshWire(pub ed25519.PublicKey) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len("ssh-ed25519")))
	b = append(b, "ssh-ed25519"...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(pub)))
	return append(b, pub...)
}

// ParsePublicKey parses an OpenSSH authorized-key line, "ssh-ed25519
// AAAA... [comment]" (config audit.public_key).
func ParsePublicKey(line string) (ed25519.PublicKey, error) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "ssh-ed25519" {
		return nil, errors.New("audit: not an ssh-ed25519 public key (want `ssh-ed25519 AAAA...`)")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return nil, errors.New("audit: ssh-ed25519 public key: bad base64")
	}
	pub := ed25519.PublicKey(blob[len(blob)-min(len(blob), ed25519.PublicKeySize):])
	if len(pub) != ed25519.PublicKeySize || !bytes.Equal(sshWire(pub), blob) {
		return nil, errors.New("audit: ssh-ed25519 public key: malformed key blob")
	}
	return bytes.Clone(pub), nil
}

// SignCheckpoint verifies the chain in pgphi.audit_log, signs its head (seq,
// hash, and the database's current time) with key, stores the checkpoint
// through pgphi.audit_checkpoint_record (which accepts it only when seq and
// hash are the stored chain's) and returns it. It refuses (with the first
// problem as error) to sign a chain that does not verify; the chain may start
// after seq 1 when old records were removed at the end of retention. Stored
// checkpoints count against the chain only when key's own public key
// verifies their signature: a bogus row in pgphi.audit_checkpoints does not
// block signing (VerifyWithKeys reports it). An empty log returns ErrEmpty.
func SignCheckpoint(ctx context.Context, q Querier, key ed25519.PrivateKey) (*Checkpoint, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: signing key is not an Ed25519 private key")
	}
	pub := key.Public().(ed25519.PublicKey)
	signed, _, err := loadSigned(ctx, q, []ed25519.PublicKey{pub})
	if err != nil {
		return nil, err
	}
	c := newChain(false)
	c.signed = signed
	if err := scanTable(ctx, q, 1, c); err != nil {
		return nil, err
	}
	c.finish()
	if c.rep.Records == 0 {
		return nil, ErrEmpty
	}
	if err := c.rep.Err(); err != nil {
		return nil, fmt.Errorf("audit: not signing a chain that does not verify: %w", err)
	}
	var now time.Time
	if err := q.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		return nil, fmt.Errorf("audit: %w", redact.Error(err))
	}
	cp := &Checkpoint{Seq: c.rep.HeadSeq, Hash: c.rep.Head, Time: now.UTC().Truncate(time.Microsecond), KeyFingerprint: Fingerprint(pub)}
	cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, checkpointMessage(cp.Seq, cp.Hash, cp.Time, cp.KeyFingerprint)))
	rows, err := q.Query(ctx, "SELECT pgphi.audit_checkpoint_record($1::bigint, $2::text, $3::timestamptz, $4::text, $5::text)",
		cp.Seq, cp.Hash, cp.Time, cp.KeyFingerprint, cp.Signature)
	if err == nil {
		rows.Close()
		err = rows.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("audit: storing the checkpoint: %w", redact.Error(err))
	}
	return cp, nil
}

// VerifyCheckpoint checks that cp was signed by pub: the fingerprint is
// pub's and the signature is valid over cp's seq, hash, time and
// fingerprint. It says nothing about the log; ProveExtends does.
func VerifyCheckpoint(cp *Checkpoint, pub ed25519.PublicKey) error {
	if cp == nil {
		return fmt.Errorf("%w: no checkpoint", ErrBadCheckpoint)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: the public key is not an Ed25519 key", ErrBadCheckpoint)
	}
	if fp := Fingerprint(pub); cp.KeyFingerprint != fp {
		return fmt.Errorf("%w: signed by key %s, not by %s", ErrBadCheckpoint, cp.KeyFingerprint, fp)
	}
	sig, err := base64.StdEncoding.DecodeString(cp.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: the signature is not 64 bytes of base64", ErrBadCheckpoint)
	}
	if !ed25519.Verify(pub, checkpointMessage(cp.Seq, cp.Hash, cp.Time, cp.KeyFingerprint), sig) {
		return fmt.Errorf("%w: signature does not match seq %d, hash and time", ErrBadCheckpoint, cp.Seq)
	}
	return nil
}

// ErrNoCheckpointKey is wrapped by VerifyCheckpointKeys when no public key is
// known: a checkpoint whose signature cannot be checked is not accepted.
var ErrNoCheckpointKey = errors.New("no public key to verify checkpoints is configured (audit.public_key)")

// VerifyCheckpointKeys checks cp against the allowed checkpoint signers: the
// key among keys whose fingerprint cp names must have signed it. No keys, or
// no key with that fingerprint, is a failure (wrapping ErrBadCheckpoint):
// the fingerprint in a checkpoint is the signer's claim, never a reason to
// trust it.
func VerifyCheckpointKeys(cp *Checkpoint, keys []ed25519.PublicKey) error {
	if cp == nil {
		return fmt.Errorf("%w: no checkpoint", ErrBadCheckpoint)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: %w", ErrBadCheckpoint, ErrNoCheckpointKey)
	}
	for _, k := range keys {
		if Fingerprint(k) == cp.KeyFingerprint && cp.KeyFingerprint != "" {
			return VerifyCheckpoint(cp, k)
		}
	}
	return fmt.Errorf("%w: signed by key %s, which is not a known checkpoint signer", ErrBadCheckpoint, cp.KeyFingerprint)
}

// ProveCheckpoint is what `pgphi audit verify --checkpoint` runs: cp's
// signature must verify under one of keys (VerifyCheckpointKeys; none
// configured is a failure), then ProveExtends.
func ProveCheckpoint(ctx context.Context, q Querier, cp *Checkpoint, keys []ed25519.PublicKey) error {
	if err := VerifyCheckpointKeys(cp, keys); err != nil {
		return err
	}
	return ProveExtends(ctx, q, cp)
}

// ProveExtends shows that the log in pgphi.audit_log extends the checkpoint
// cp: the chain verifies from seq 1 (prev ZeroHash), every seq present,
// through cp.Seq, where the record has hash cp.Hash (so, by the chain, every
// record before it is unchanged and none was removed), to the head (so the
// log only grew after it). Otherwise it returns a *Problem naming the seq
// where history was rewritten or removed: the first problem of the chain
// (a gap at seq 1 when the prefix before the checkpoint was deleted), or
// cp.Seq when the chain is consistent but the signed record was replaced (a
// consistent rewrite, which only a checkpoint or the mirror reveals). Check
// cp's signature first (ProveCheckpoint does both).
func ProveExtends(ctx context.Context, q Querier, cp *Checkpoint) error {
	if cp == nil || cp.Seq < 1 {
		return errors.New("audit: checkpoint has no seq")
	}
	c := newChain(true)
	c.signed = map[int64][]string{cp.Seq: {cp.Hash}}
	if err := scanTable(ctx, q, 1, c); err != nil {
		return err
	}
	c.finish()
	if err := c.rep.Err(); err != nil {
		return err
	}
	if c.rep.Records == 0 || (len(c.signed) > 0 && c.rep.HeadSeq >= cp.Seq) {
		// The signed seq was never read: removed with every record before it.
		return &Problem{Seq: cp.Seq, Kind: KindGap, Detail: fmt.Sprintf("the signed record %d is missing from the log", cp.Seq)}
	}
	return nil
}

// Checkpoints returns the checkpoints stored in pgphi.audit_checkpoints, in
// seq order. They are a convenience copy; the auditor's own copies are the
// ones that prove anything.
func Checkpoints(ctx context.Context, q Querier) ([]Checkpoint, error) {
	rows, err := q.Query(ctx, `SELECT seq, hash, signed_at, key_fingerprint, signature
		FROM pgphi.audit_checkpoints ORDER BY seq, signed_at`)
	if err != nil {
		return nil, fmt.Errorf("audit: reading pgphi.audit_checkpoints: %w", redact.Error(err))
	}
	cps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Checkpoint, error) {
		var cp Checkpoint
		err := r.Scan(&cp.Seq, &cp.Hash, &cp.Time, &cp.KeyFingerprint, &cp.Signature)
		cp.Time = cp.Time.UTC()
		return cp, err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: reading pgphi.audit_checkpoints: %w", redact.Error(err))
	}
	return cps, nil
}
