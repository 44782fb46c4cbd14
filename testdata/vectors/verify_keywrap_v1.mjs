// Independent verifier for pgphi key wrapping test vectors (docs/FORMAT.md,
// sections 1.1 to 1.3), using nothing but Node's built-in crypto.
// Usage: node verify_keywrap_v1.mjs keywrap_v1.json
// Exits 0 if every vector behaves as expected, 1 otherwise.

import { pbkdf2Sync, createDecipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';

const u32be = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };

// Section 1.2: 32 raw bytes, else trimmed 64 hex digits, else trimmed base64 of 32 bytes.
function parseKeyFile(data) {
  if (data.length === 32) return data;
  const text = data.toString('latin1').replace(/^[ \t\r\n\v\f]+|[ \t\r\n\v\f]+$/g, '');
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/]{43}(=)?$/.test(text)) {
    const key = Buffer.from(text, 'base64');
    if (key.length === 32) return key;
  }
  throw new Error('invalid key file');
}

function kek(spec) {
  switch (spec.kind) {
    case 'passphrase': {
      const salt = Buffer.from(spec.salt_hex, 'hex');
      if (salt.length < 16) throw new Error('salt too short');
      if (!(spec.iterations >= 600000)) throw new Error('too few iterations');
      if (spec.passphrase.length === 0) throw new Error('empty passphrase');
      return pbkdf2Sync(Buffer.from(spec.passphrase, 'utf8'), salt, spec.iterations, 32, 'sha256');
    }
    case 'keyfile':
      return parseKeyFile(Buffer.from(spec.key_file_b64, 'base64'));
  }
  throw new Error(`unknown KEK kind ${spec.kind}`);
}

// Section 1.3.
function unwrap(kekBytes, keyId, wrapped) {
  if (wrapped.length !== 60) throw new Error('wrapped key is not 60 bytes');
  const d = createDecipheriv('aes-256-gcm', kekBytes, wrapped.subarray(0, 12), { authTagLength: 16 });
  d.setAAD(Buffer.concat([Buffer.from('pgphi-keywrap-v1', 'ascii'), u32be(keyId)]));
  d.setAuthTag(wrapped.subarray(44));
  return Buffer.concat([d.update(wrapped.subarray(12, 44)), d.final()]);
}

function check(v) {
  let k;
  try {
    k = kek(v.kek);
  } catch (e) {
    if (v.error === true && !v.kek_hex) return 'rejected (KEK)';
    throw e;
  }
  if (k.toString('hex') !== v.kek_hex) throw new Error('KEK mismatch');
  let dk;
  try {
    dk = unwrap(k, v.key_id, Buffer.from(v.wrapped_hex, 'hex'));
  } catch (e) {
    if (v.error === true) return 'rejected (unwrap)';
    throw new Error(`unwrap failed: ${e.message}`);
  }
  if (v.error === true) throw new Error('unwrapped a key that must fail');
  if (dk.toString('hex') !== v.data_key_hex) throw new Error('data key mismatch');
  return 'ok';
}

const path = process.argv[2];
if (!path) {
  console.error('usage: node verify_keywrap_v1.mjs keywrap_v1.json');
  process.exit(2);
}
const vectors = JSON.parse(readFileSync(path, 'utf8'));
let passed = 0, failed = 0;
for (const v of vectors) {
  try {
    const how = check(v);
    passed++;
    console.log(`PASS ${v.name}: ${how}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${v.name}: ${e.message}`);
  }
}
console.log(`keywrap_v1: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
