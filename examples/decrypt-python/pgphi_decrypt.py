#!/usr/bin/python3
"""Offline decryptor for pgphi field ciphertexts (docs/FORMAT.md, version 1).

Written from docs/FORMAT.md alone, for exports and disaster recovery: it
needs the wrapped data keys (from the pgphi.kek and pgphi.data_keys tables,
or a JSON export of them), the KEK (a key file or the passphrase), and
ciphertexts with their binding (table, column, row key). It uses Debian's
python3-cryptography for AES-GCM, HKDF and PBKDF2 (the standard library has
no AES-GCM) and python3-psycopg2 only when it reads a database.

Secrets never come from argv or the environment: the KEK is read from a file
(mode 0600) or an inherited file descriptor. Nothing it prints or reports
contains a decrypted value except the decrypted output itself, written to
stdout; errors name table, column and the position of the value, never a
value, a key or a passphrase.

Exit codes: 0 success, 1 a value did not decrypt (wrong row, tampered,
unknown key id, malformed), 2 usage or input error, 3 the KEK does not unwrap
the data keys (wrong passphrase or key file).
"""

import argparse
import base64
import binascii
import json
import os
import stat
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

VERSION = 0x01
HEADER = 1 + 4 + 12  # version, key id, nonce
TAG = 16

# FORMAT.md §2.4: type byte -> name.
TYPES = {
    0x01: "text",
    0x02: "integer",
    0x03: "numeric",
    0x04: "boolean",
    0x05: "date",
    0x06: "timestamp",
    0x07: "timestamptz",
    0x08: "json",
    0x09: "jsonb",
    0x0A: "bytea",
    0x7F: "other",
}

MAX_ITERATIONS = 100_000_000
MAX_PASSPHRASE = 4096

# The canonical session settings of FORMAT.md §2.4: key columns are read as
# text under them, exactly as pgphi bound the ciphertexts.
CANONICAL_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}


class Failure(Exception):
    """An error with its exit code; the message never holds a secret or a value."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def u16be(n):
    return struct.pack(">H", n)


def u32be(n):
    return struct.pack(">I", n)


def lp(b):
    return u32be(len(b)) + b


# ---------------------------------------------------------------- the KEK


ASCII_SPACE = b" \t\r\n\x0b\x0c"
B64_ALPHABET = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def kek_from_key_file(data):
    """FORMAT.md §1.2: raw 32 bytes, else 64 hex digits, else 44/43 base64 characters."""
    if len(data) == 32:
        return bytes(data)
    s = data.strip(ASCII_SPACE)
    if len(s) == 64 and all(c in b"0123456789abcdefABCDEF" for c in s):
        return binascii.unhexlify(s)
    body = None
    if len(s) == 44 and s.endswith(b"=") and not s.endswith(b"=="):
        body = s[:43]
    elif len(s) == 43:
        body = s
    if body is not None and all(c in B64_ALPHABET for c in body):
        try:
            key = base64.b64decode(body + b"=", validate=True)
        except binascii.Error:
            key = b""
        if len(key) == 32:
            return key
    raise Failure(2, "the key file is not 32 raw bytes, 64 hex digits or 32 bytes of base64 (docs/FORMAT.md §1.2)")


def read_secret_file(path, what, check_mode):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise Failure(2, f"cannot open the {what} {path}: {e.strerror}")
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if check_mode and stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            raise Failure(2, f"the {what} {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        return f.read(MAX_PASSPHRASE + 1)


def read_secret_fd(fd, what):
    try:
        with os.fdopen(fd, "rb", closefd=True) as f:
            return f.read(MAX_PASSPHRASE + 1)
    except OSError as e:
        raise Failure(2, f"cannot read the {what} from file descriptor {fd}: {e.strerror}")


def passphrase_bytes(raw):
    # As pgphi reads PGPHI_PASSPHRASE_FILE and _FD: one trailing newline
    # (LF, then CR) is the file's, not the passphrase's. Nothing else is
    # trimmed or normalized (FORMAT.md §1.1).
    if len(raw) > MAX_PASSPHRASE:
        raise Failure(2, "the passphrase is longer than 4096 bytes")
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw:
        raise Failure(2, "the passphrase is empty")
    return raw


def derive_kek(kek_row, secret_kind, secret):
    """The KEK of the stored parameters (FORMAT.md §1.1, §1.2; SEARCH.md §6)."""
    kind = kek_row.get("kind")
    if kind == "passphrase":
        if secret_kind != "passphrase":
            raise Failure(2, "the data keys are wrapped under a passphrase KEK: give --passphrase-file or --passphrase-fd")
        salt = kek_row.get("salt")
        iterations = kek_row.get("iterations")
        if not isinstance(salt, bytes) or len(salt) < 16:
            raise Failure(2, "pgphi.kek: the PBKDF2 salt is missing or shorter than 16 bytes")
        if not isinstance(iterations, int) or iterations < 600_000 or iterations > MAX_ITERATIONS:
            raise Failure(2, "pgphi.kek: the PBKDF2 iteration count is outside 600000..100000000")
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
        return kdf.derive(passphrase_bytes(secret))
    if kind == "keyfile":
        if secret_kind != "keyfile":
            raise Failure(2, "the data keys are wrapped under a key file KEK: give --key-file or --key-fd")
        return kek_from_key_file(secret)
    if kind == "pkcs11":
        raise Failure(2, "the KEK is in a PKCS#11 token (docs/FORMAT.md §1.5): this decryptor needs a passphrase or key file KEK")
    raise Failure(2, "pgphi.kek: unknown KEK kind")


def unwrap(kek, key_id, wrapped):
    """FORMAT.md §1.3."""
    if len(wrapped) != 60:
        raise Failure(2, f"pgphi.data_keys: the wrapped key of key id {key_id} is {len(wrapped)} bytes, not 60")
    aad = b"pgphi-keywrap-v1" + u32be(key_id)
    try:
        key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], aad)
    except InvalidTag:
        raise Failure(3, "cannot unwrap data key: wrong passphrase or key file")
    if len(key) != 32:
        raise Failure(3, f"the data key of key id {key_id} is not 32 bytes")
    return key


# ------------------------------------------------------------ field values


def purpose_key(data_key, purpose, *contexts):
    """FORMAT.md §1.4."""
    info = b"pgphi/v1/" + purpose.encode("ascii") + b"\x00" + b"".join(lp(c.encode("utf-8")) for c in contexts)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(data_key)


class Keyring:
    """Unwrapped data keys by key id, and column keys derived on demand."""

    def __init__(self, data_keys):
        self.data_keys = data_keys
        self.column_keys = {}

    def column_key(self, key_id, table, column):
        k = (key_id, table, column)
        if k not in self.column_keys:
            dk = self.data_keys.get(key_id)
            if dk is None:
                return None
            self.column_keys[k] = AESGCM(purpose_key(dk, "field", table, column))
        return self.column_keys[k]


def decrypt_field(ring, ct, table, column, pk):
    """FORMAT.md §2.6; returns (type name, canonical text). Raises Failure(1)."""
    if not table or not column:
        raise Failure(2, "empty table or column name")
    if not ct or ct[0] != VERSION:
        raise Failure(1, "format error: unknown version")
    if len(ct) < HEADER + 1 + TAG:
        raise Failure(1, "format error: truncated")
    key_id = struct.unpack(">I", ct[1:5])[0]
    aead = ring.column_key(key_id, table, column)
    if aead is None:
        raise Failure(1, f"unknown key id {key_id}")
    if len(pk) > 65535:
        raise Failure(2, "more than 65535 key columns")
    aad = (b"pgphi-field" + ct[0:1] + ct[1:5] + lp(table.encode("utf-8")) + lp(column.encode("utf-8"))
           + u16be(len(pk)) + b"".join(lp(p.encode("utf-8")) for p in pk))
    try:
        pt = aead.decrypt(ct[5:17], ct[17:], aad)
    except InvalidTag:
        raise Failure(1, "decryption failed: wrong key, another row, column or table, or tampered")
    type_name = TYPES.get(pt[0])
    if type_name is None:
        raise Failure(1, "format error: unknown type byte")
    try:
        text = pt[1:].decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise Failure(1, "format error: invalid UTF-8")
    return type_name, text


# --------------------------------------------------------- key sources


def bytea_from_json(v):
    # row_to_json renders bytea as PostgreSQL's hex output, "\x0102...".
    if v is None:
        return None
    if isinstance(v, str) and v.startswith("\\x"):
        try:
            return binascii.unhexlify(v[2:])
        except binascii.Error:
            pass
    raise Failure(2, "the keys export has a bytea field that is not \\x followed by hex digits")


def keys_from_export(path):
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        kek = doc["kek"]
        rows = doc["data_keys"]
        kek_row = {"kind": kek.get("kind"), "salt": bytea_from_json(kek.get("salt")), "iterations": kek.get("iterations")}
        wrapped = [(int(r["key_id"]), bytea_from_json(r["wrapped"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Failure(2, f"cannot read the keys export {path}: {type(e).__name__}")
    return kek_row, wrapped


def connect(url):
    import psycopg2  # only needed for the database modes

    try:
        conn = psycopg2.connect(url)
    except psycopg2.Error as e:
        raise Failure(2, f"cannot connect to the database: {(e.pgerror or str(e)).strip().splitlines()[0]}")
    conn.set_session(readonly=True)
    with conn.cursor() as cur:
        for name, value in CANONICAL_SETTINGS.items():
            cur.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
    return conn


def keys_from_database(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT kind, salt, iterations FROM pgphi.kek WHERE id = 1")
        row = cur.fetchone()
        if row is None:
            raise Failure(2, "pgphi.kek is empty: no keys were initialized in this database")
        kek_row = {"kind": row[0], "salt": bytes(row[1]) if row[1] is not None else None, "iterations": row[2]}
        cur.execute("SELECT key_id, wrapped FROM pgphi.data_keys ORDER BY key_id")
        wrapped = [(int(k), bytes(w)) for k, w in cur.fetchall()]
    return kek_row, wrapped


def load_keyring(kek_row, wrapped, secret_kind, secret):
    kek = derive_kek(kek_row, secret_kind, secret)
    return Keyring({key_id: unwrap(kek, key_id, w) for key_id, w in wrapped})


# ---------------------------------------------------------- value sources


def qident(name):
    return '"' + name.replace('"', '""') + '"'


def decrypt_table(conn, ring, table, out):
    """Every protected column of table, row by row, in key order."""
    with conn.cursor() as cur:
        cur.execute("""SELECT p.column_name, p.encrypted_column, pl.spec::text
                         FROM pgphi.protected_columns p LEFT JOIN pgphi.plans pl ON pl.plan_id = p.plan_id
                        WHERE p.table_name = %s ORDER BY p.column_name""", (table,))
        cols = cur.fetchall()
    if not cols:
        raise Failure(2, f"{table} has no protected column in pgphi.protected_columns")
    key_cols = None
    for _, _, spec in cols:
        if spec is None:
            continue
        for t in json.loads(spec).get("tables", []):
            if t.get("table") == table:
                key_cols = [k["name"] for k in t.get("key", [])]
    if not key_cols:
        raise Failure(2, f"the key columns of {table} are not recorded in pgphi.plans")
    schema, _, name = table.partition(".")
    select = ", ".join([qident(k) + "::text" for k in key_cols] + [qident(enc) for _, enc, _ in cols])
    order = ", ".join(qident(k) for k in key_cols)
    n = 0
    with conn.cursor(name="pgphi_decrypt") as cur:  # server-side: tables of any size
        cur.itersize = 1000
        cur.execute(f"SELECT {select} FROM {qident(schema)}.{qident(name)} ORDER BY {order}")
        for row in cur:
            n += 1
            pk = list(row[:len(key_cols)])
            values = {}
            for (column, _, _), ct in zip(cols, row[len(key_cols):]):
                if ct is None:
                    values[column] = None
                    continue
                try:
                    t, text = decrypt_field(ring, bytes(ct), table, column, pk)
                except Failure as e:
                    raise Failure(e.code, f"{table}.{column}: row {n} in key order: {e}")
                values[column] = {"type": t, "text": text}
            out.write(json.dumps({"key": dict(zip(key_cols, pk)), "values": values}, ensure_ascii=False) + "\n")
    return n


def decrypt_lines(ring, inp, out):
    """JSON lines {table, column, key: [...], ciphertext: base64 or null} -> {type, text} or null."""
    n = 0
    for line in inp:
        if not line.strip():
            continue
        n += 1
        try:
            req = json.loads(line)
            table, column, pk, ct64 = req["table"], req["column"], req["key"], req["ciphertext"]
            if not isinstance(pk, list) or not all(isinstance(p, str) for p in pk):
                raise TypeError
            ct = None if ct64 is None else base64.b64decode(ct64, validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Failure(2, f"input line {n}: not a JSON object with table, column, key (array of strings) and ciphertext (base64 or null)")
        if ct is None:  # SQL NULL has no encoding (FORMAT.md §2.3)
            out.write("null\n")
            continue
        try:
            t, text = decrypt_field(ring, ct, table, column, pk)
        except Failure as e:
            raise Failure(e.code, f"input line {n} ({table}.{column}): {e}")
        out.write(json.dumps({"type": t, "text": text}, ensure_ascii=False) + "\n")
    return n


# -------------------------------------------------------------------- main


def main(argv):
    p = argparse.ArgumentParser(
        prog="pgphi_decrypt.py",
        description="Decrypt pgphi field ciphertexts offline (docs/FORMAT.md v1). Secrets come from files or descriptors, never argv.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--database-url", help="read pgphi.kek and pgphi.data_keys (and, with --table, the rows) from this database (libpq URL; a password belongs in ~/.pgpass or PGPASSFILE)")
    src.add_argument("--keys", metavar="FILE", help="a JSON export of pgphi.kek and pgphi.data_keys (README.md shows the query)")
    kek = p.add_mutually_exclusive_group(required=True)
    kek.add_argument("--key-file", metavar="PATH", help="the KEK key file (mode 0600)")
    kek.add_argument("--key-fd", type=int, metavar="N", help="read the KEK key file from inherited descriptor N")
    kek.add_argument("--passphrase-file", metavar="PATH", help="the passphrase, in a file (mode 0600; one trailing newline is ignored)")
    kek.add_argument("--passphrase-fd", type=int, metavar="N", help="read the passphrase from inherited descriptor N")
    p.add_argument("--table", metavar="SCHEMA.TABLE", help="with --database-url: decrypt every protected column of this table; without it, decrypt JSON lines from stdin")
    args = p.parse_args(argv)

    if args.key_file:
        secret_kind, secret = "keyfile", read_secret_file(args.key_file, "key file", True)
    elif args.key_fd is not None:
        secret_kind, secret = "keyfile", read_secret_fd(args.key_fd, "key file")
    elif args.passphrase_file:
        secret_kind, secret = "passphrase", read_secret_file(args.passphrase_file, "passphrase file", True)
    else:
        secret_kind, secret = "passphrase", read_secret_fd(args.passphrase_fd, "passphrase")

    out = sys.stdout
    if args.table and not args.database_url:
        raise Failure(2, "--table needs --database-url")
    if args.table and "." not in args.table:
        args.table = "public." + args.table
    conn = None
    if args.database_url:
        conn = connect(args.database_url)
        kek_row, wrapped = keys_from_database(conn)
    else:
        kek_row, wrapped = keys_from_export(args.keys)
    ring = load_keyring(kek_row, wrapped, secret_kind, secret)
    del secret
    try:
        if args.table:
            n = decrypt_table(conn, ring, args.table, out)
            print(f"pgphi_decrypt: {n} rows of {args.table} decrypted", file=sys.stderr)
        else:
            n = decrypt_lines(ring, sys.stdin, out)
            print(f"pgphi_decrypt: {n} values decrypted", file=sys.stderr)
    finally:
        if conn is not None:
            conn.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"pgphi_decrypt: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # never a traceback: it could quote a value
        print(f"pgphi_decrypt: unexpected {type(e).__name__}", file=sys.stderr)
        sys.exit(2)
