#!/usr/bin/python3
"""The Felicity-style patient service, driven by JSON lines on stdin.

`app.py init` creates the patient table (SQLAlchemy metadata, as Felicity's
migrations do) and exits; `app.py` alone serves requests, one per line, one
response per line on stdout:

    {"op": "create", "patients": [{...}, ...]}      -> {"ok": true, "uids": [...]}
    {"op": "update", "uid": "...", "fields": {...}} -> {"ok": true}
    {"op": "get", "uid": "..."}                     -> {"ok": true, "patient": {...}}
    {"op": "list", "uids": ["...", ...]}            -> {"ok": true, "patients": [...]} (one decrypt request per column)
    {"op": "search", "by": "name", "value": "..."}  -> {"ok": true, "patients": [...]}
        by: name (phonetic on first and last name), phone_last4 (value: 4 digits),
        age (min_age, max_age: date of birth by age), text (Felicity's free-text search)
    {"op": "phase"}                                 -> {"ok": true, "phase": {...}} (flags and columns; no values)

Errors answer {"ok": false, "error": "..."} and never contain a value.
The service logs one line per request on stderr, without values.

Environment: FELICITY_DATABASE_URL (the application's database), PGPHI_SERVE_URL
(pgphi serve), PGPHI_SERVE_TOKEN_FILE (its bearer token, a file of mode 0600).
"""

import json
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from felicity.models import Base  # noqa: E402
from felicity.pgphi_serve import Serve, ServeError  # noqa: E402
from felicity.service import PatientService, ServiceError  # noqa: E402


def log(msg):
    print(f"felicity: {msg}", file=sys.stderr, flush=True)


def read_token(path):
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            raise SystemExit("felicity: the token file is readable by group or others; chmod 600 it")
        return f.read().decode("ascii").strip()


def db_error(e):
    # SQLAlchemy's message quotes the statement's parameters, PostgreSQL's
    # DETAIL can quote a row and some primary messages quote the input
    # ('invalid input syntax for type date: "..."'): only the error code and
    # the primary message up to its first quote.
    orig = getattr(e, "orig", None)
    code = getattr(orig, "pgcode", None)
    primary = getattr(getattr(orig, "diag", None), "message_primary", None) or "see the server log"
    for q in ('"', "'"):
        primary = primary.split(q, 1)[0]
    return f"database error {code or type(e).__name__}: {primary.rstrip(' :')}"


def main():
    url = os.environ["FELICITY_DATABASE_URL"]
    if url.startswith("postgres://"):
        url = "postgresql+psycopg2://" + url[len("postgres://"):]
    engine = create_engine(url, pool_size=2, future=True)
    if sys.argv[1:] == ["init"]:
        Base.metadata.create_all(engine)
        log("init: patient table created")
        return 0
    serve = Serve(os.environ["PGPHI_SERVE_URL"], read_token(os.environ["PGPHI_SERVE_TOKEN_FILE"]))
    svc = PatientService(engine, serve, log)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "create":
                resp = {"ok": True, "uids": svc.create(req["patients"])}
            elif op == "update":
                svc.update(req["uid"], req["fields"])
                resp = {"ok": True}
            elif op == "get":
                resp = {"ok": True, "patient": svc.get(req["uid"])}
            elif op == "list":
                resp = {"ok": True, "patients": svc.get_many(req["uids"])}
            elif op == "search":
                resp = {"ok": True, "patients": svc.search(req["by"], req.get("value"), req.get("min_age"), req.get("max_age"))}
            elif op == "phase":
                resp = {"ok": True, "phase": svc.phase().describe()}
            else:
                raise ServiceError("unknown op")
        except (ServiceError, ServeError) as e:
            log(f"{op}: refused: {e}")
            resp = {"ok": False, "error": str(e)}
        except SQLAlchemyError as e:
            msg = db_error(e)
            log(f"{op}: {msg}")
            resp = {"ok": False, "error": msg}
        except (ValueError, KeyError, TypeError) as e:
            log(f"bad request: {type(e).__name__}")
            resp = {"ok": False, "error": f"bad request: {type(e).__name__}"}
        except Exception as e:  # never a traceback: it could quote a value
            log(f"{op}: unexpected {type(e).__name__}")
            resp = {"ok": False, "error": f"unexpected {type(e).__name__}"}
        print(json.dumps(resp, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
