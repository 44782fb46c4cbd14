//go:build cgo

package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// ckmAESKeyWrapKWP is CKM_AES_KEY_WRAP_KWP of PKCS#11 3.0, which
// github.com/miekg/pkcs11 does not name.
const ckmAESKeyWrapKWP = 0x0000210B

var mechanismCodes = map[string]uint{
	MechKWP:        ckmAESKeyWrapKWP,
	MechKeyWrapPad: pkcs11.CKM_AES_KEY_WRAP_PAD,
	MechGCM:        pkcs11.CKM_AES_GCM,
}

// pkcs11WrapSuffix ends what the key wrap mechanisms protect: data key ||
// u32be(key id) || "pgk1", 40 bytes. The key id binds the wrapped key to its
// id as the associated data of Wrap does; the 4 bytes of "pgk1" make the
// value a multiple of 8 bytes, so that RFC 5649 adds no padding (SoftHSM
// 2.6 returns a padded value from C_UnwrapKey with CKM_AES_KEY_WRAP_PAD).
const pkcs11WrapSuffix = "pgk1"

const pkcs11WrappedValueSize = KeySize + 4 + len(pkcs11WrapSuffix)

// pkcs11WrappedSize is the length of a data key wrapped with RFC 5649.
const pkcs11WrappedSize = pkcs11WrappedValueSize + 8

// modules shares one initialized *pkcs11.Ctx per module path in a process:
// C_Initialize may be called once per module, and C_Finalize ends every
// session of it.
var modules struct {
	sync.Mutex
	m map[string]*moduleRef
}

type moduleRef struct {
	ctx  *pkcs11.Ctx
	refs int
}

func openModule(path string) (*pkcs11.Ctx, error) {
	modules.Lock()
	defer modules.Unlock()
	if r, ok := modules.m[path]; ok {
		r.refs++
		return r.ctx, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("keys: cannot load the PKCS#11 module %s (%s): check the path and that it is a PKCS#11 library", path, EnvPKCS11Module)
	}
	if err := ctx.Initialize(); err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("keys: initializing the PKCS#11 module %s: %w", path, err)
	}
	if modules.m == nil {
		modules.m = map[string]*moduleRef{}
	}
	modules.m[path] = &moduleRef{ctx: ctx, refs: 1}
	return ctx, nil
}

func releaseModule(path string) {
	modules.Lock()
	defer modules.Unlock()
	r, ok := modules.m[path]
	if !ok {
		return
	}
	if r.refs--; r.refs > 0 {
		return
	}
	delete(modules.m, path)
	r.ctx.Finalize()
	r.ctx.Destroy()
}

func isCKR(err error, code uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == code
}

// PKCS11Provider is a KEK provider whose KEK is a non-extractable AES-256
// key in a PKCS#11 token: data keys are wrapped and unwrapped by the token
// (CKM_AES_KEY_WRAP_KWP, the token's RFC 5649 CKM_AES_KEY_WRAP_PAD, or
// CKM_AES_GCM), and the KEK never enters this process. It logs in when first
// used and out on Close. Its methods are safe for concurrent use.
type pkcs11Provider struct {
	cfg  PKCS11Config
	mech string // configured mechanism, "" for auto

	mu   sync.Mutex
	ctx  *pkcs11.Ctx // nil when closed
	slot uint
	sess pkcs11.SessionHandle
	key  pkcs11.ObjectHandle
	info keyInfo
}

// keyInfo is what the provider learned about the token and the KEK.
type keyInfo struct {
	tokenLabel, tokenSerial string
	label                   string
	id                      []byte
	wrap, unwrap            bool // CKA_WRAP, CKA_UNWRAP
	encrypt, decrypt        bool // CKA_ENCRYPT, CKA_DECRYPT
}

// NewPKCS11Provider returns a KeyWrapper for the KEK cfg describes. It
// checks the configuration but does not load the module until used.
func NewPKCS11Provider(cfg PKCS11Config) (KeyWrapper, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	mech, _ := canonicalMechanism(cfg.Mechanism)
	return &pkcs11Provider{cfg: cfg, mech: mech}, nil
}

func (p *pkcs11Provider) Name() string { return KindPKCS11 }

func (p *pkcs11Provider) KEK(KEKParams) ([]byte, error) {
	return nil, errors.New("keys: a pkcs11 KEK never leaves its token: it wraps and unwraps data keys itself")
}

// Close logs out of the token and releases the module. The provider opens
// them again when used.
func (p *pkcs11Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked()
	return nil
}

func (p *pkcs11Provider) closeLocked() {
	if p.ctx == nil {
		return
	}
	p.ctx.Logout(p.sess)
	p.ctx.CloseSession(p.sess)
	p.ctx = nil
	releaseModule(p.cfg.Module)
}

// openLocked loads the module, finds the token, logs in and finds the KEK.
func (p *pkcs11Provider) openLocked() (err error) {
	if p.ctx != nil {
		return nil
	}
	ctx, err := openModule(p.cfg.Module)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			releaseModule(p.cfg.Module)
		}
	}()
	slot, tok, err := p.findToken(ctx)
	if err != nil {
		return err
	}
	sess, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("keys: opening a session with PKCS#11 token %q: %w", tok.Label, err)
	}
	defer func() {
		if err != nil {
			ctx.CloseSession(sess)
		}
	}()
	err = ctx.Login(sess, pkcs11.CKU_USER, p.cfg.PIN)
	if isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		// Another session of this process is logged in: the login state
		// is shared, so log out and in again to check this PIN.
		ctx.Logout(sess)
		err = ctx.Login(sess, pkcs11.CKU_USER, p.cfg.PIN)
	}
	if err != nil {
		switch {
		case isCKR(err, pkcs11.CKR_PIN_INCORRECT), isCKR(err, pkcs11.CKR_PIN_LEN_RANGE), isCKR(err, pkcs11.CKR_PIN_INVALID):
			return &errWrongPIN{fmt.Sprintf("keys: PKCS#11 token %q refused the PIN (%v): check %s", tok.Label, err, EnvPKCS11PINFile)}
		case isCKR(err, pkcs11.CKR_PIN_LOCKED), isCKR(err, pkcs11.CKR_PIN_EXPIRED):
			return &errWrongPIN{fmt.Sprintf("keys: PKCS#11 token %q: the user PIN is locked or expired (%v): the token's security officer must reset it", tok.Label, err)}
		}
		return fmt.Errorf("keys: logging in to PKCS#11 token %q: %w", tok.Label, err)
	}
	key, info, err := p.findKey(ctx, sess)
	if err != nil {
		ctx.Logout(sess)
		return err
	}
	info.tokenLabel, info.tokenSerial = trimPadded(tok.Label), trimPadded(tok.SerialNumber)
	p.ctx, p.slot, p.sess, p.key, p.info = ctx, slot, sess, key, info
	return nil
}

func trimPadded(s string) string { return strings.TrimRight(s, " \x00") }

func (p *pkcs11Provider) findToken(ctx *pkcs11.Ctx) (uint, pkcs11.TokenInfo, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("keys: listing PKCS#11 slots: %w", err)
	}
	var found []uint
	var info pkcs11.TokenInfo
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if p.cfg.Slot >= 0 && uint(p.cfg.Slot) != s {
			continue
		}
		if p.cfg.TokenLabel != "" && trimPadded(ti.Label) != p.cfg.TokenLabel {
			continue
		}
		if p.cfg.TokenSerial != "" && trimPadded(ti.SerialNumber) != p.cfg.TokenSerial {
			continue
		}
		found = append(found, s)
		info = ti
	}
	want := p.describeToken()
	switch len(found) {
	case 0:
		return 0, info, fmt.Errorf("%w: no PKCS#11 token %s in %s (%d slots with a token)", ErrNoKEK, want, p.cfg.Module, len(slots))
	case 1:
		return found[0], info, nil
	}
	return 0, info, fmt.Errorf("keys: %d PKCS#11 tokens match %s: set %s or %s", len(found), want, EnvPKCS11Serial, EnvPKCS11Slot)
}

func (p *pkcs11Provider) describeToken() string {
	var parts []string
	if p.cfg.TokenLabel != "" {
		parts = append(parts, fmt.Sprintf("labelled %q", p.cfg.TokenLabel))
	}
	if p.cfg.TokenSerial != "" {
		parts = append(parts, fmt.Sprintf("with serial %q", p.cfg.TokenSerial))
	}
	if p.cfg.Slot >= 0 {
		parts = append(parts, fmt.Sprintf("in slot %d", p.cfg.Slot))
	}
	return strings.Join(parts, " ")
}

func (p *pkcs11Provider) describeKey() string {
	var parts []string
	if p.cfg.KeyLabel != "" {
		parts = append(parts, fmt.Sprintf("labelled %q", p.cfg.KeyLabel))
	}
	if len(p.cfg.KeyID) > 0 {
		parts = append(parts, "with id "+hex.EncodeToString(p.cfg.KeyID))
	}
	return strings.Join(parts, " ")
}

func (p *pkcs11Provider) findKey(ctx *pkcs11.Ctx, sess pkcs11.SessionHandle) (pkcs11.ObjectHandle, keyInfo, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
	}
	if p.cfg.KeyLabel != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, p.cfg.KeyLabel))
	}
	if len(p.cfg.KeyID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, p.cfg.KeyID))
	}
	if err := ctx.FindObjectsInit(sess, tmpl); err != nil {
		return 0, keyInfo{}, fmt.Errorf("keys: searching the PKCS#11 token: %w", err)
	}
	objs, _, err := ctx.FindObjects(sess, 2)
	ctx.FindObjectsFinal(sess)
	if err != nil {
		return 0, keyInfo{}, fmt.Errorf("keys: searching the PKCS#11 token: %w", err)
	}
	switch len(objs) {
	case 0:
		return 0, keyInfo{}, fmt.Errorf("%w: no secret key %s in PKCS#11 token %s", ErrNoKEK, p.describeKey(), p.describeToken())
	case 1:
	default:
		return 0, keyInfo{}, fmt.Errorf("keys: several secret keys %s in PKCS#11 token %s: set %s", p.describeKey(), p.describeToken(), EnvPKCS11KeyID)
	}
	attrs, err := ctx.GetAttributeValue(sess, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, nil),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
	})
	if err != nil {
		return 0, keyInfo{}, fmt.Errorf("keys: reading the attributes of the KEK %s: %w", p.describeKey(), err)
	}
	var info keyInfo
	var keyType, valueLen uint64
	var extractable, sensitive bool
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_KEY_TYPE:
			keyType = ulong(a.Value)
		case pkcs11.CKA_VALUE_LEN:
			valueLen = ulong(a.Value)
		case pkcs11.CKA_EXTRACTABLE:
			extractable = boolAttr(a.Value)
		case pkcs11.CKA_SENSITIVE:
			sensitive = boolAttr(a.Value)
		case pkcs11.CKA_LABEL:
			info.label = string(a.Value)
		case pkcs11.CKA_ID:
			info.id = bytes.Clone(a.Value)
		case pkcs11.CKA_WRAP:
			info.wrap = boolAttr(a.Value)
		case pkcs11.CKA_UNWRAP:
			info.unwrap = boolAttr(a.Value)
		case pkcs11.CKA_ENCRYPT:
			info.encrypt = boolAttr(a.Value)
		case pkcs11.CKA_DECRYPT:
			info.decrypt = boolAttr(a.Value)
		}
	}
	if keyType != pkcs11.CKK_AES || valueLen != KeySize {
		return 0, keyInfo{}, fmt.Errorf("keys: the KEK %s is not an AES-256 key (key type %#x, %d bytes)", p.describeKey(), keyType, valueLen)
	}
	if extractable || !sensitive {
		return 0, keyInfo{}, fmt.Errorf("keys: the KEK %s can leave the token (CKA_EXTRACTABLE %v, CKA_SENSITIVE %v): generate it with CKA_EXTRACTABLE false and CKA_SENSITIVE true",
			p.describeKey(), extractable, sensitive)
	}
	return objs[0], info, nil
}

// ulong decodes a CK_ULONG attribute (native byte order, 4 or 8 bytes).
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

func boolAttr(b []byte) bool { return len(b) == 1 && b[0] != 0 }

// chooseMechanismLocked picks the wrapping mechanism for a new key store.
func (p *pkcs11Provider) chooseMechanismLocked() (string, error) {
	mechs, err := p.ctx.GetMechanismList(p.slot)
	if err != nil {
		return "", fmt.Errorf("keys: listing the PKCS#11 token's mechanisms: %w", err)
	}
	has := map[uint]bool{}
	for _, m := range mechs {
		has[m.Mechanism] = true
	}
	usable := func(name string) error {
		if !has[mechanismCodes[name]] {
			return fmt.Errorf("keys: PKCS#11 token %q does not offer %s", p.info.tokenLabel, name)
		}
		if name == MechGCM {
			if !p.info.encrypt || !p.info.decrypt {
				return fmt.Errorf("keys: the KEK %s does not allow %s (it needs CKA_ENCRYPT and CKA_DECRYPT)", p.describeKey(), name)
			}
		} else if !p.info.wrap || !p.info.unwrap {
			return fmt.Errorf("keys: the KEK %s does not allow %s (it needs CKA_WRAP and CKA_UNWRAP)", p.describeKey(), name)
		}
		return nil
	}
	if p.mech != "" {
		return p.mech, usable(p.mech)
	}
	var errs []error
	for _, m := range []string{MechKWP, MechKeyWrapPad, MechGCM} {
		err := usable(m)
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("keys: no way to wrap data keys with this KEK: %w", errors.Join(errs...))
}

// NewParams logs in, finds the KEK and chooses the mechanism.
func (p *pkcs11Provider) NewParams() (KEKParams, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil {
		return KEKParams{}, err
	}
	mech, err := p.chooseMechanismLocked()
	if err != nil {
		return KEKParams{}, err
	}
	return KEKParams{
		Kind:        KindPKCS11,
		Mechanism:   mech,
		TokenLabel:  p.info.tokenLabel,
		TokenSerial: p.info.tokenSerial,
		KeyLabel:    p.info.label,
		KeyID:       p.info.id,
	}, nil
}

// checkParamsLocked refuses params recorded for another key. The token
// label and serial are not compared: a KEK cloned into a backup HSM has
// another serial.
func (p *pkcs11Provider) checkParamsLocked(params KEKParams) (uint, error) {
	if params.Kind != KindPKCS11 {
		return 0, fmt.Errorf("keys: data keys are wrapped with a `%s` KEK, but a PKCS#11 token was configured", params.Kind)
	}
	code, ok := mechanismCodes[params.Mechanism]
	if !ok {
		return 0, fmt.Errorf("keys: unknown PKCS#11 mechanism %q recorded in pgphi.kek", params.Mechanism)
	}
	if params.KeyLabel != "" && p.info.label != params.KeyLabel ||
		len(params.KeyID) > 0 && !bytes.Equal(p.info.id, params.KeyID) {
		return 0, fmt.Errorf("keys: this database's data keys are wrapped by the key labelled %q with id %s (token %q, serial %q), but the configured key is labelled %q with id %s",
			params.KeyLabel, hex.EncodeToString(params.KeyID), params.TokenLabel, params.TokenSerial, p.info.label, hex.EncodeToString(p.info.id))
	}
	return code, nil
}

func (p *pkcs11Provider) WrapKey(params KEKParams, id uint32, dataKey []byte) ([]byte, error) {
	if len(dataKey) != KeySize {
		return nil, fmt.Errorf("keys: data key must be %d bytes, got %d", KeySize, len(dataKey))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil {
		return nil, err
	}
	code, err := p.checkParamsLocked(params)
	if err != nil {
		return nil, err
	}
	if code == pkcs11.CKM_AES_GCM {
		return p.gcmSealLocked(id, dataKey)
	}
	value := append(binary.BigEndian.AppendUint32(bytes.Clone(dataKey), id), pkcs11WrapSuffix...)
	defer clear(value)
	obj, err := p.ctx.CreateObject(p.sess, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	})
	if err != nil {
		return nil, fmt.Errorf("keys: PKCS#11: loading the data key into a session object: %w", err)
	}
	defer p.ctx.DestroyObject(p.sess, obj)
	wrapped, err := p.ctx.WrapKey(p.sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(code, nil)}, p.key, obj)
	if err != nil {
		return nil, fmt.Errorf("keys: PKCS#11 token %q: wrapping a data key with %s: %w", p.info.tokenLabel, params.Mechanism, err)
	}
	return wrapped, nil
}

func (p *pkcs11Provider) UnwrapKey(params KEKParams, id uint32, wrapped []byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil {
		return nil, err
	}
	code, err := p.checkParamsLocked(params)
	if err != nil {
		return nil, err
	}
	if code == pkcs11.CKM_AES_GCM {
		return p.gcmOpenLocked(id, wrapped)
	}
	obj, err := p.ctx.UnwrapKey(p.sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(code, nil)}, p.key, wrapped, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
	})
	if err != nil {
		// An integrity check that fails is CKR_WRAPPED_KEY_INVALID in most
		// tokens, CKR_GENERAL_ERROR in SoftHSM 2.6.
		if isUnwrapFailure(err) || isCKR(err, pkcs11.CKR_GENERAL_ERROR) {
			return nil, fmt.Errorf("%w (token: %v)", ErrWrongKEK, err)
		}
		return nil, fmt.Errorf("keys: PKCS#11 token %q: unwrapping data key %d with %s: %w", p.info.tokenLabel, id, params.Mechanism, err)
	}
	defer p.ctx.DestroyObject(p.sess, obj)
	attrs, err := p.ctx.GetAttributeValue(p.sess, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil || len(attrs) != 1 {
		return nil, fmt.Errorf("keys: PKCS#11 token %q: reading unwrapped data key %d: %v", p.info.tokenLabel, id, err)
	}
	value := attrs[0].Value
	defer clear(value)
	if len(value) != pkcs11WrappedValueSize || binary.BigEndian.Uint32(value[KeySize:]) != id ||
		string(value[KeySize+4:]) != pkcs11WrapSuffix {
		return nil, ErrWrongKEK
	}
	return bytes.Clone(value[:KeySize]), nil
}

func isUnwrapFailure(err error) bool {
	for _, c := range []uint{pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE,
		pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE} {
		if isCKR(err, c) {
			return true
		}
	}
	return false
}

// gcmSealLocked encrypts the data key in the token with AES-256-GCM, in the
// layout of Wrap: nonce || ciphertext || tag, with the associated data
// "pgphi-keywrap-v1" || u32be(id). The nonce is random; a token that makes
// its own returns it in the parameters.
func (p *pkcs11Provider) gcmSealLocked(id uint32, dataKey []byte) ([]byte, error) {
	iv := make([]byte, 12)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	gp := pkcs11.NewGCMParams(iv, wrapAAD(id), 128)
	defer gp.Free()
	if err := p.ctx.EncryptInit(p.sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, gp)}, p.key); err != nil {
		return nil, fmt.Errorf("keys: PKCS#11 token %q: starting %s: %w", p.info.tokenLabel, MechGCM, err)
	}
	ct, err := p.ctx.Encrypt(p.sess, dataKey)
	if err != nil {
		return nil, fmt.Errorf("keys: PKCS#11 token %q: wrapping a data key with %s: %w", p.info.tokenLabel, MechGCM, err)
	}
	if got := gp.IV(); len(got) == 12 {
		iv = got
	}
	out := append(bytes.Clone(iv), ct...)
	if len(out) != WrappedKeySize {
		return nil, fmt.Errorf("keys: PKCS#11 token %q returned %d bytes for a %s-wrapped key, want %d", p.info.tokenLabel, len(out), MechGCM, WrappedKeySize)
	}
	return out, nil
}

func (p *pkcs11Provider) gcmOpenLocked(id uint32, wrapped []byte) ([]byte, error) {
	if len(wrapped) != WrappedKeySize {
		return nil, fmt.Errorf("keys: wrapped data key is malformed: want %d bytes, got %d", WrappedKeySize, len(wrapped))
	}
	gp := pkcs11.NewGCMParams(bytes.Clone(wrapped[:12]), wrapAAD(id), 128)
	defer gp.Free()
	if err := p.ctx.DecryptInit(p.sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, gp)}, p.key); err != nil {
		return nil, fmt.Errorf("keys: PKCS#11 token %q: starting %s: %w", p.info.tokenLabel, MechGCM, err)
	}
	dk, err := p.ctx.Decrypt(p.sess, wrapped[12:])
	if err != nil {
		// A tag that does not verify is CKR_ENCRYPTED_DATA_INVALID in
		// most tokens, CKR_GENERAL_ERROR in SoftHSM 2.6.
		if isUnwrapFailure(err) || isCKR(err, pkcs11.CKR_GENERAL_ERROR) {
			return nil, fmt.Errorf("%w (token: %v)", ErrWrongKEK, err)
		}
		return nil, fmt.Errorf("keys: PKCS#11 token %q: unwrapping data key %d with %s: %w", p.info.tokenLabel, id, MechGCM, err)
	}
	if len(dk) != KeySize {
		clear(dk)
		return nil, ErrWrongKEK
	}
	return dk, nil
}
