// Independent verifier for pgphi field ciphertext v1 test vectors.
//
// Written from docs/FORMAT.md only, using nothing but Node's built-in crypto.
// Usage: node verify_field_v1.mjs field_v1.json
// Exits 0 if every vector behaves as expected, 1 otherwise.

import { hkdfSync, createDecipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';

const TYPES = new Map([
  [0x01, 'text'], [0x02, 'integer'], [0x03, 'numeric'], [0x04, 'boolean'],
  [0x05, 'date'], [0x06, 'timestamp'], [0x07, 'timestamptz'], [0x08, 'json'],
  [0x09, 'jsonb'], [0x0a, 'bytea'], [0x7f, 'other'],
]);

const u16be = (n) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32be = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const lp = (s) => { const b = Buffer.from(s, 'utf8'); return Buffer.concat([u32be(b.length), b]); };

class FormatError extends Error {}
class UnknownKeyError extends Error {}

// Section 1.4.
function columnKey(rootKey, table, column) {
  const info = Buffer.concat([Buffer.from('pgphi/v1/field', 'ascii'), Buffer.from([0]), lp(table), lp(column)]);
  return Buffer.from(hkdfSync('sha256', rootKey, Buffer.alloc(0), info, 32));
}

// Section 2.2.
function aad(version, keyId, table, column, pk) {
  return Buffer.concat([
    Buffer.from('pgphi-field', 'ascii'), Buffer.from([version]), u32be(keyId),
    lp(table), lp(column), u16be(pk.length), ...pk.map(lp),
  ]);
}

// Section 2.6. keys maps key id -> column key.
function open(ct, keys, table, column, pk) {
  if (ct.length === 0 || ct[0] !== 0x01) throw new FormatError('unknown version');
  if (ct.length < 34) throw new FormatError('truncated');
  const keyId = ct.readUInt32BE(1);
  const key = keys.get(keyId);
  if (!key) throw new UnknownKeyError(`unknown key id ${keyId}`);
  const nonce = ct.subarray(5, 17);
  const body = ct.subarray(17, ct.length - 16);
  const tag = ct.subarray(ct.length - 16);
  const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  d.setAAD(aad(ct[0], keyId, table, column, pk));
  d.setAuthTag(tag);
  const pt = Buffer.concat([d.update(body), d.final()]); // final() throws on auth failure
  const type = TYPES.get(pt[0]);
  if (type === undefined) throw new FormatError('unknown type byte');
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(pt.subarray(1));
  } catch {
    throw new FormatError('text is not valid UTF-8');
  }
  return { type, text };
}

function check(v) {
  const root = Buffer.from(v.root_key_hex, 'hex');
  if (root.length !== 32) throw new Error('root key is not 32 bytes');
  const ck = columnKey(root, v.table, v.column);
  if (ck.toString('hex') !== v.column_key_hex) throw new Error('column key mismatch');
  if (!Array.isArray(v.primary_key)) throw new Error('primary_key missing');
  const keys = new Map([[v.key_id, ck]]);
  const ct = Buffer.from(v.ciphertext_hex, 'hex');
  let got;
  try {
    got = open(ct, keys, v.table, v.column, v.primary_key);
  } catch (e) {
    if (v.error === true) return `rejected (${e instanceof FormatError ? 'format' : e instanceof UnknownKeyError ? 'unknown key' : 'decrypt'})`;
    throw new Error(`open failed: ${e.message}`);
  }
  if (v.error === true) throw new Error('opened a ciphertext that must fail');
  if (got.type !== v.expected.type) throw new Error(`type ${got.type}, want ${v.expected.type}`);
  if (got.text !== v.expected.text) throw new Error(`text mismatch`);
  return 'ok';
}

const path = process.argv[2];
if (!path) {
  console.error('usage: node verify_field_v1.mjs field_v1.json');
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
console.log(`field_v1: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
