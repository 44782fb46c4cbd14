// Recomputes the blind index terms pgphi wrote to a database, from what the
// database holds and the KEK's secret alone (docs/SEARCH.md section 6):
// pgphi.kek, pgphi.data_keys, pgphi.blind_indexes (bits, key_id, options)
// and each row's value and <column>_bidx. Written from the documents, with
// Node.js's standard library only.
//
//   node testdata/independent/search_db.mjs dump.json
//
// dump.json: {"kek": {kind, salt_hex, iterations}, "secret_b64": the
// passphrase (UTF-8) or key file bytes, "data_keys": [{key_id, wrapped_hex,
// state}], "blind_indexes": [{table_name, column_name, sub_kind, bits,
// key_id, format_version, options}], "rows": [{table, column, value|null,
// bidx|null (decimal strings)}]}.
//
// Phone numbers: without libphonenumber, only values written in E.164 that
// are valid numbers (the "+" form) and values with fewer than 4 digits are
// checked; the E.164 and last-4 terms are recomputed, and at most one more
// term, of tag phone/area, is allowed.
import { createDecipheriv, pbkdf2Sync } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  normalize, phoneticMessages, storedDateMessages, subKindKey, subKinds, tag, term, textMessages,
} from "./search.mjs";

// FORMAT.md 1.1 and 1.2.
function deriveKEK(kek, secret) {
  if (kek.kind === "passphrase") {
    return pbkdf2Sync(secret, Buffer.from(kek.salt_hex, "hex"), kek.iterations, 32, "sha256");
  }
  if (kek.kind !== "keyfile") throw new Error(`unknown KEK kind ${kek.kind}`);
  if (secret.length === 32) return secret;
  const t = secret.toString("latin1").replace(/^[ \t\r\n\v\f]+|[ \t\r\n\v\f]+$/g, "");
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, "hex");
  if (/^[A-Za-z0-9+/]{43}=?$/.test(t)) {
    const b = Buffer.from(t, "base64");
    if (b.length === 32) return b;
  }
  throw new Error("invalid key file");
}

// FORMAT.md 1.3.
function unwrap(kekBytes, keyID, wrapped) {
  if (wrapped.length !== 60) throw new Error(`wrapped key ${keyID}: ${wrapped.length} bytes`);
  const aad = Buffer.concat([Buffer.from("pgphi-keywrap-v1", "ascii"), Buffer.from([keyID >>> 24, (keyID >>> 16) & 255, (keyID >>> 8) & 255, keyID & 255])]);
  const d = createDecipheriv("aes-256-gcm", kekBytes, wrapped.subarray(0, 12), { authTagLength: 16 });
  d.setAAD(aad);
  d.setAuthTag(wrapped.subarray(44));
  return Buffer.concat([d.update(wrapped.subarray(12, 44)), d.final()]);
}

const KIND_OF = (sub) => (sub.startsWith("prefix/") ? "prefix" : sub.startsWith("phone/") ? "phone" : sub.startsWith("date/") ? "date" : sub);

function main() {
  const dump = JSON.parse(readFileSync(process.argv[2], "utf8"));
  const kekBytes = deriveKEK(dump.kek, Buffer.from(dump.secret_b64, "base64"));
  const dataKeys = new Map(dump.data_keys.map((k) => [k.key_id, unwrap(kekBytes, k.key_id, Buffer.from(k.wrapped_hex, "hex"))]));

  // Columns from pgphi.blind_indexes: kinds, options, and per sub-kind key and bits.
  const cols = new Map();
  for (const r of dump.blind_indexes) {
    if (r.format_version !== 1) throw new Error(`format_version ${r.format_version}`);
    const id = `${r.table_name}\u0000${r.column_name}`;
    const o = JSON.parse(r.options);
    const c = cols.get(id) ?? { table: r.table_name, column: r.column_name, options: o, subs: {}, kinds: new Set(), keyIDs: new Set() };
    if (JSON.stringify(c.options) !== JSON.stringify(o)) throw new Error(`${id}: options differ between sub-kinds`);
    c.subs[r.sub_kind] = { bits: r.bits, key: subKindKey(dataKeys.get(r.key_id), r.table_name, r.column_name, r.sub_kind) };
    c.kinds.add(KIND_OF(r.sub_kind));
    c.keyIDs.add(r.key_id);
    cols.set(id, c);
  }
  for (const c of cols.values()) {
    const want = subKinds([...c.kinds], c.options).sort();
    if (JSON.stringify(want) !== JSON.stringify(Object.keys(c.subs).sort())) throw new Error(`${c.table}.${c.column}: sub-kinds ${Object.keys(c.subs)} do not follow from the options`);
  }

  let failures = 0;
  const stats = {};
  const fail = (where, msg) => {
    failures++;
    if (failures <= 30) console.error(`FAIL ${where}: ${msg}`);
  };
  for (const row of dump.rows) {
    const c = cols.get(`${row.table}\u0000${row.column}`);
    const where = `${row.table}.${row.column} ${JSON.stringify(row.value)}`;
    const st = (stats[`${row.table}.${row.column} (${[...c.kinds].join(", ")})`] ??= { rows: 0, nulls: 0, empty: 0, skipped: 0 });
    st.rows++;
    if (row.value === null) {
      st.nulls++;
      if (row.bidx !== null) fail(where, "NULL value with terms");
      continue;
    }
    if (row.bidx === null) {
      fail(where, "value not indexed (NULL terms)");
      continue;
    }
    const kinds = [...c.kinds];
    const msgs = [];
    if (kinds.some((k) => ["exact", "prefix", "contains"].includes(k))) msgs.push(...textMessages(kinds, c.options, normalize(row.value, c.options.fold_accents)));
    if (c.kinds.has("phonetic")) msgs.push(...phoneticMessages(row.value));
    if (c.kinds.has("date")) msgs.push(...storedDateMessages(row.value));
    let areaAllowed = false;
    if (c.kinds.has("phone")) {
      const digits = row.value.normalize("NFKC").replace(/[^0-9]/g, "");
      if (/^\+[1-9][0-9]{6,14}$/.test(row.value)) {
        msgs.push(["phone/e164", row.value], ["phone/last4", row.value.slice(-4)]);
        areaAllowed = true;
      } else if (digits.length >= 4) {
        st.skipped++;
        continue; // validity needs libphonenumber
      }
    }
    const got = [...new Set(msgs.map(([s, m]) => term(c.subs[s].key, s, c.subs[s].bits, m)))].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    let stored = row.bidx.map(BigInt);
    if (areaAllowed) {
      const extra = stored.filter((t) => !got.includes(t));
      if (extra.length > 1 || (extra.length === 1 && Number(extra[0] >> 56n) !== tag("phone/area"))) fail(where, `unexpected phone terms ${extra}`);
      stored = stored.filter((t) => got.includes(t));
    }
    if (got.length === 0) st.empty++;
    if (JSON.stringify(got.map(String)) !== JSON.stringify(stored.map(String))) fail(where, `terms ${got} stored ${stored}`);
  }
  for (const [k, s] of Object.entries(stats)) {
    console.log(`${k}: ${s.rows - s.skipped} of ${s.rows} rows recomputed (${s.nulls} NULL, ${s.empty} with {}${s.skipped ? `, ${s.skipped} non-E.164 phones skipped` : ""})`);
  }
  for (const c of cols.values()) console.log(`${c.table}.${c.column}: terms derive from data key ${[...c.keyIDs].join(", ")}; options ${JSON.stringify(c.options)}`);
  console.log(`${dump.rows.length} rows, ${failures} disagreements`);
  process.exit(failures === 0 ? 0 : 1);
}

main();
