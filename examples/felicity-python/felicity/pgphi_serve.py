"""A client of `pgphi serve` with the standard library's urllib only.

Values travel in their canonical text (docs/FORMAT.md §2.4); terms as
decimal strings (int64 does not fit a JSON number everywhere); ciphertexts
in base64. Errors carry serve's code and message, which never contain a
value; this client adds none.
"""

import json
import time
import urllib.error
import urllib.request

RETRIES = 8


def retry_after(header, attempt):
    try:
        return min(float(header), 5.0)
    except (TypeError, ValueError):
        return min(0.05 * 2 ** attempt, 2.0)


class ServeError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"pgphi serve: HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Serve:
    def __init__(self, url, token, timeout=30):
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self._token)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for attempt in range(RETRIES + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                if e.code == 429 and attempt < RETRIES:
                    # Over the client's rate: wait as told, then again.
                    time.sleep(retry_after(e.headers.get("Retry-After"), attempt))
                    continue
                try:
                    err = json.loads(e.read().decode("utf-8")).get("error", {})
                except ValueError:
                    err = {}
                raise ServeError(e.code, err.get("code", "unknown"), err.get("message", e.reason)) from None
            except urllib.error.URLError as e:
                raise ServeError(0, "unreachable", str(e.reason)) from None

    def flags(self):
        """{flag name: bool}."""
        return {k: bool(v) for k, v in self._call("GET", "/v1/flags")["flags"].items()}

    def columns(self):
        """The protected columns, as serve describes them: a list of dicts."""
        return self._call("GET", "/v1/columns")["columns"]

    def encrypt(self, table, column, rows):
        """rows: [(key dict, canonical text or None)] -> [assignments dict]."""
        doc = self._call("POST", "/v1/encrypt", {
            "table": table, "column": column,
            "rows": [{"key": k, "value": v} for k, v in rows]})
        return [r["assignments"] for r in doc["rows"]]

    def decrypt(self, table, column, reason, rows):
        """rows: [(key dict, base64 ciphertext or None)] -> [canonical text or None]."""
        doc = self._call("POST", "/v1/decrypt", {
            "table": table, "column": column, "reason": reason,
            "rows": [{"key": k, "ciphertext": c} for k, c in rows]})
        return [r.get("value") for r in doc["rows"]]

    def search(self, table, column, kind, reason, columns, **query):
        """One search: kind (exact, prefix, contains, phonetic, phone, last4,
        area-code, date, year, year-month, age-between) and value, or
        min_age and max_age. Returns (keys, rows)."""
        body = {"table": table, "column": column, "kind": kind, "reason": reason, "columns": columns}
        body.update(query)
        doc = self._call("POST", "/v1/search", body)
        return doc["keys"], doc["rows"]
