"""Independent implementation of pgphi's phone terms, format version 1.

Written from docs/SEARCH.md (section 1 and section 3, "Phones") alone, with
Debian's python3 and python3-phonenumbers (the Python port of
libphonenumber) and nothing else:

    /usr/bin/python3 testdata/independent/phone.py testdata/search-vectors.json

For every value of every column with the phone kind, it parses the value as
stored (its raw text, with the column's recorded phone_region), computes the
phone/e164, phone/last4 and phone/area messages itself, compares them with
the vector's "phone" member (absent: no phone terms), then derives the
sub-kind keys and computes the terms of its own messages (HKDF and HMAC from
the standard library) and compares them with the vector's "terms". It
prints each disagreement (at most 40) and a summary, and exits 1 if any value
disagrees.

Which numbers are valid, and their NDC lengths, come from libphonenumber's
metadata. This was checked with python3-phonenumbers 8.12.57 (Debian
bookworm) against vectors generated with libphonenumber 9.0.32 metadata: the
vectors leave out numbers whose numbering plan changed between the two
(docs/SEARCH.md section 7). With another version, a disagreement may be a
numbering plan change; the summary names both versions.
"""

import hashlib
import hmac
import json
import sys
import unicodedata

import phonenumbers

TAGS = {"phone/e164": 0x04, "phone/last4": 0x05, "phone/area": 0x06}


def lp(b):
    return len(b).to_bytes(4, "big") + b


def hkdf_sha256(ikm, info, length=32):
    # RFC 5869 with an empty salt, which means HashLen zero bytes.
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def sub_kind_key(data_key, table, column, sub_kind):
    info = b"pgphi/v1/blind-index\x00" + lp(table.encode()) + lp(column.encode()) + lp(sub_kind.encode())
    return hkdf_sha256(data_key, info)


def term(key, sub_kind, bits, msg):
    mac = hmac.new(key, msg.encode(), hashlib.sha256).digest()
    v = int.from_bytes(mac[:7], "big")
    return (TAGS[sub_kind] << 56) | (v >> (56 - bits))


def ascii_digits(s):
    return "".join(c for c in s if "0" <= c <= "9")


def phone_messages(value, region):
    """(valid, e164, last4, area) of a stored value, "" for no term, or None
    when the value has no phone terms at all."""
    try:
        n = phonenumbers.parse(value, region or None)
        valid = phonenumbers.is_valid_number(n)
    except phonenumbers.NumberParseException:
        valid = False
    if valid:
        nsn = phonenumbers.national_significant_number(n)
        e164 = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
        length = phonenumbers.length_of_national_destination_code(n)
        area = "+%d %s" % (n.country_code, nsn[:length]) if length > 0 else ""
        last4 = nsn[-4:] if len(nsn) >= 4 else ""
        return (True, e164, last4, area)
    digits = ascii_digits(unicodedata.normalize("NFKC", value))
    if len(digits) < 4:
        return None
    return (False, "digits:" + digits, digits[-4:], "")


def main(path):
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    counted = agreed = 0
    failures = []
    for col in vectors["columns"]:
        if "phone" not in col["kinds"]:
            continue
        if col["kinds"] != ["phone"]:
            failures.append("%s: kinds %s: this checker computes phone terms only" % (col["name"], col["kinds"]))
            continue
        region = col["options"]["phone_region"]
        data_key = bytes.fromhex(col["data_key_hex"])
        keys = {s: sub_kind_key(data_key, col["table"], col["column"], s) for s in TAGS}
        for val in col["values"]:
            counted += 1
            # The vectors are made-up test data, not PHI: name the value.
            where = "%s, %s" % (col["name"], json.dumps(val["value"], ensure_ascii=False))
            got = phone_messages(val["value"], region)
            p = val.get("phone")
            want = None if p is None else (p["valid"], p["e164"], p["last4"], p["area"])
            if got != want:
                failures.append("%s: messages %s, vector %s" % (where, got, want))
                continue
            terms = set()
            if got is not None:
                _, e164, last4, area = got
                for sub, msg in (("phone/e164", e164), ("phone/last4", last4), ("phone/area", area)):
                    if msg:
                        terms.add(term(keys[sub], sub, col["bits"][sub], msg))
            if sorted(terms) != sorted(int(t) for t in val["terms"]):
                failures.append("%s: terms %s, vector %s" % (where, sorted(terms), val["terms"]))
                continue
            agreed += 1
    for f in failures[:40]:
        print(f)
    if len(failures) > 40:
        print("... %d more" % (len(failures) - 40))
    print(
        "phone: %d/%d values agree, %d disagree (python3-phonenumbers %s; vectors: %s)"
        % (agreed, counted, len(failures), phonenumbers.__version__,
           vectors.get("versions", {}).get("github.com/nyaruka/phonenumbers", "?"))
    )
    if counted == 0:
        print("phone: the vectors have no phone column")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: phone.py search-vectors.json\n")
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
