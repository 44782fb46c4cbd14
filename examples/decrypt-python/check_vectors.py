#!/usr/bin/python3
"""Checks pgphi_decrypt.py against docs/FORMAT.md §4's test vectors.

    check_vectors.py testdata/vectors/field_v1.json testdata/vectors/keywrap_v1.json

Every field case must decrypt to its expected type and text, or fail when it
is an error case; every key wrapping case must derive its KEK and unwrap its
data key, or fail. Prints one line per file and exits 1 on the first
disagreement.
"""

import base64
import binascii
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pgphi_decrypt as d  # noqa: E402


def check_field(cases):
    for c in cases:
        data_key = binascii.unhexlify(c["root_key_hex"])
        ring = d.Keyring({c["key_id"]: data_key})
        key = d.purpose_key(data_key, "field", c["table"], c["column"])
        if key.hex() != c["column_key_hex"]:
            return f"{c['name']}: column key differs"
        try:
            got = d.decrypt_field(ring, binascii.unhexlify(c["ciphertext_hex"]), c["table"], c["column"], c["primary_key"])
        except d.Failure:
            if c.get("error"):
                continue
            return f"{c['name']}: did not decrypt"
        if c.get("error"):
            return f"{c['name']}: decrypted an error case"
        if got != (c["expected"]["type"], c["expected"]["text"]):
            return f"{c['name']}: decrypted to another type or text"
    return None


def check_keywrap(cases):
    for c in cases:
        kek = c["kek"]
        try:
            if kek["kind"] == "passphrase":
                row = {"kind": "passphrase", "salt": binascii.unhexlify(kek["salt_hex"]), "iterations": kek["iterations"]}
                k = d.derive_kek(row, "passphrase", kek["passphrase"].encode("utf-8"))
            else:
                k = d.derive_kek({"kind": "keyfile"}, "keyfile", base64.b64decode(kek["key_file_b64"]))
            if "kek_hex" in c and k.hex() != c["kek_hex"]:
                return f"{c['name']}: KEK differs"
            dk = d.unwrap(k, c["key_id"], binascii.unhexlify(c["wrapped_hex"]))
        except d.Failure:
            if c.get("error"):
                continue
            return f"{c['name']}: failed"
        if c.get("error"):
            return f"{c['name']}: an error case succeeded"
        if dk.hex() != c["data_key_hex"]:
            return f"{c['name']}: data key differs"
    return None


def main(argv):
    if len(argv) != 2:
        print("usage: check_vectors.py field_v1.json keywrap_v1.json", file=sys.stderr)
        return 2
    for path, check in zip(argv, (check_field, check_keywrap)):
        with open(path, encoding="utf-8") as f:
            cases = json.load(f)
        problem = check(cases)
        if problem:
            print(f"{os.path.basename(path)}: {problem}", file=sys.stderr)
            return 1
        print(f"{os.path.basename(path)}: {len(cases)} cases agree")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
