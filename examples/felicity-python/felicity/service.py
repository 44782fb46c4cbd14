"""PatientService: create, update, read and search patients in every phase
of pgphi's migration of the patient table.

What the service does is decided at every call from two facts it reads,
never from a setting of its own:

- pgphi's flags (GET /v1/flags of `pgphi serve`): `use_encrypted_search`
  (read the ciphertext, search through serve) and `require_encryption`
  (write ciphertext and terms, NULL plaintext);
- the table's columns (the database catalog) and pgphi's protected columns
  (GET /v1/columns): whether `<col>` and `<col>_encrypted` exist, i.e.
  before apply, during it, after cleanup (no plaintext) or after rollback
  (no ciphertext).

| phase | writes | reads | searches |
|---|---|---|---|
| before apply, after rollback | plaintext | plaintext | SQL on plaintext (Felicity's ILIKE) |
| apply running, flags off | plaintext (pgphi's trigger encrypts) | plaintext | SQL on plaintext |
| use_encrypted_search | plaintext | ciphertext, decrypted by serve (plaintext for a value changed since, until pgphi catches up) | serve |
| require_encryption | every pgphi-owned column from serve's /v1/encrypt, plaintext NULL | ciphertext | serve |
| after cleanup | the same, without a plaintext column | ciphertext | serve |

Nothing here logs or returns a value in an error.
"""

import base64
import datetime

from sqlalchemy import MetaData, Table, and_, func, inspect, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA
from sqlalchemy.types import LargeBinary

from .models import FIELDS, new_uid
from .pgphi_serve import ServeError

TABLE = "public.patient"
DEFAULTS = {"age_dob_estimated": False, "consent_sms": False, "internal_use": False, "active": True}


class ServiceError(Exception):
    """An error the caller sees; its message names fields, never values."""


class Phase:
    """What the service knows about the table at one call."""

    def __init__(self, flags, table_columns, protected):
        self.flags = flags
        self.columns = table_columns  # name -> SQLAlchemy type
        self.protected = protected  # column -> serve's description, only those whose ciphertext column exists

    @property
    def use_encrypted_search(self):
        return bool(self.flags.get("use_encrypted_search"))

    @property
    def require_encryption(self):
        return bool(self.flags.get("require_encryption"))

    def has_plain(self, col):
        return col in self.columns

    def encrypted(self, col):
        p = self.protected.get(col)
        return p["encrypted_column"] if p else None

    def writes_encrypted(self, col):
        # require_encryption refuses a plaintext; without a plaintext column
        # (after cleanup) there is nowhere else to write.
        return self.encrypted(col) is not None and (self.require_encryption or not self.has_plain(col))

    def reads_encrypted(self, col):
        return self.encrypted(col) is not None and (self.use_encrypted_search or not self.has_plain(col))

    def describe(self):
        return {
            "use_encrypted_search": self.use_encrypted_search,
            "require_encryption": self.require_encryption,
            "plaintext": sorted(c for c in self.protected if self.has_plain(c)),
            "encrypted": sorted(self.protected),
        }


class PatientService:
    def __init__(self, engine, serve, log):
        self.engine = engine
        self.serve = serve
        self.log = log
        self._table = None
        self._table_cols = None

    # ------------------------------------------------------------ the phase

    def phase(self):
        flags = self.serve.flags()
        insp = inspect(self.engine)
        cols = {c["name"]: c["type"] for c in insp.get_columns("patient", schema="public")}
        protected = {}
        for c in self.serve.columns():
            if c.get("table") not in (TABLE, "patient"):
                continue
            enc = c.get("encrypted_column")
            if enc and enc in cols:
                protected[c["column"]] = c
        return Phase(flags, cols, protected)

    def table(self, phase):
        # Reflected again whenever pgphi changed the columns (apply adds,
        # cleanup drops, rollback restores).
        key = tuple(sorted(phase.columns))
        if self._table_cols != key:
            self._table = Table("patient", MetaData(), autoload_with=self.engine, schema="public")
            self._table_cols = key
        return self._table

    # --------------------------------------------------------------- writes

    def create(self, patients):
        ph = self.phase()
        t = self.table(ph)
        rows = []
        for p in patients:
            unknown = set(p) - set(FIELDS)
            if unknown:
                raise ServiceError("unknown patient fields: " + ", ".join(sorted(unknown)))
            for f in ("first_name", "last_name", "client_patient_id"):
                if p.get(f) in (None, ""):
                    raise ServiceError(f"{f} is required")
            row = {f: p.get(f, DEFAULTS.get(f)) for f in FIELDS}
            row["uid"] = row["uid"] or new_uid()
            rows.append(row)
        values = self._assign(ph, t, rows)
        with self.engine.begin() as conn:
            conn.execute(t.insert(), values)
        self.log(f"create: {len(rows)} patients; {self._mode(ph)}")
        return [r["uid"] for r in rows]

    def update(self, uid, fields):
        unknown = set(fields) - set(FIELDS) | ({"uid"} & set(fields))
        if unknown:
            raise ServiceError("fields that cannot be updated: " + ", ".join(sorted(unknown)))
        ph = self.phase()
        t = self.table(ph)
        row = dict(fields, uid=uid)
        values = self._assign(ph, t, [row])[0]
        del values["uid"]
        with self.engine.begin() as conn:
            n = conn.execute(t.update().where(t.c.uid == uid).values(**values)).rowcount
        if n != 1:
            raise ServiceError("no patient with that uid")
        self.log(f"update: fields {', '.join(sorted(fields))}; {self._mode(ph)}")

    def _assign(self, ph, t, rows):
        """The column values to write for rows: plaintext where the phase
        writes plaintext, else every column serve's /v1/encrypt assigns."""
        out = [{} for _ in rows]
        for i, r in enumerate(rows):
            for f, v in r.items():
                if not (f in ph.protected and ph.writes_encrypted(f)):
                    out[i][f] = canonical_date(v) if f == "date_of_birth" else v
        for col in sorted(ph.protected):
            if not ph.writes_encrypted(col):
                continue
            idx = [i for i, r in enumerate(rows) if col in r]
            if not idx:
                continue
            reqs = [({"uid": rows[i]["uid"]}, canonical_text(rows[i][col])) for i in idx]
            try:
                assigned = self.serve.encrypt(TABLE, col, reqs)
            except ServeError as e:
                raise ServiceError(f"encrypting patient.{col}: {e}") from None
            for i, a in zip(idx, assigned):
                for name, v in a.items():
                    out[i][name] = decode_assignment(t, name, v)
        return out

    # ---------------------------------------------------------------- reads

    def get(self, uid):
        found = self.get_many([uid])
        if not found:
            raise ServiceError("no patient with that uid")
        return found[0]

    def get_many(self, uids, ph=None):
        ph = ph or self.phase()
        t = self.table(ph)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.uid.in_(list(uids))).order_by(t.c.uid))]
        return self._materialize(ph, rows, "patient record")

    def _materialize(self, ph, rows, why):
        out = [{f: jsonable(r.get(f)) for f in FIELDS} for r in rows]
        for col in sorted(ph.protected):
            enc = ph.encrypted(col)
            todo = []
            for i, r in enumerate(rows):
                ct, plain = r.get(enc), r.get(col)
                if ph.reads_encrypted(col) and not (ct is None and plain is not None):
                    todo.append(i)
                else:
                    # Before use_encrypted_search; or a value the
                    # application changed since pgphi encrypted it (the
                    # trigger cleared its ciphertext until the catch-up).
                    out[i][col] = jsonable(plain)
            if not todo:
                continue
            reqs = [({"uid": rows[i]["uid"]}, b64(rows[i][enc])) for i in todo]
            try:
                values = self.serve.decrypt(TABLE, col, f"felicity: {why}", reqs)
            except ServeError as e:
                raise ServiceError(f"decrypting patient.{col}: {e}") from None
            for i, v in zip(todo, values):
                out[i][col] = v
        return out

    # ------------------------------------------------------------- searches

    def search(self, by, value=None, min_age=None, max_age=None):
        ph = self.phase()
        t = self.table(ph)
        if by == "name":
            cols, query = ["first_name", "last_name"], {"kind": "phonetic", "value": value}
        elif by == "phone_last4":
            cols, query = ["phone_mobile", "phone_home"], {"kind": "last4", "value": value}
        elif by == "age":
            cols, query = ["date_of_birth"], {"kind": "age-between", "min_age": min_age, "max_age": max_age}
        elif by == "text":
            return self._search_text(ph, t, value)
        else:
            raise ServiceError("search by name, phone_last4, age or text")
        if all(ph.encrypted(c) and (ph.use_encrypted_search or not ph.has_plain(c)) for c in cols):
            # serve finds the rows and reads their protected columns in the
            # same request (one audit record); the other columns come from
            # the table.
            found = {}
            for c in cols:
                keys, rows = self._serve_find(c, query, sorted(ph.protected))
                for k, r in zip(keys, rows):
                    found[k["uid"]] = r
            self.log(f"search by {by}: through pgphi serve, {len(found)} patients; {self._mode(ph)}")
            return self._with_plain_fields(ph, t, found)
        # Plaintext, the way Felicity searches it.
        if by == "name":
            pat = "%" + value + "%"
            where = or_(t.c.first_name.ilike(pat), t.c.last_name.ilike(pat))
        elif by == "phone_last4":
            where = or_(*[func.right(func.regexp_replace(t.c[c], r"\D", "", "g"), 4) == value for c in cols])
        else:
            years = func.date_part("year", func.age(func.current_date(), t.c.date_of_birth))
            where = and_(years >= min_age, years <= max_age)
        with self.engine.connect() as conn:
            uids = [r[0] for r in conn.execute(select(t.c.uid).where(where))]
        self.log(f"search by {by}: plaintext SQL, {len(uids)} patients; {self._mode(ph)}")
        return self.get_many(sorted(uids), ph)

    def _search_text(self, ph, t, value):
        """Felicity's free-text search: any of the names, ids and phones.
        On ciphertext each column answers with the search kinds pgphi gives
        it (a prefix of a first name, a part of a last name, a phone), so a
        few matches differ from ILIKE's."""
        plain_cols = ["first_name", "middle_name", "last_name", "patient_id", "client_patient_id", "phone_mobile", "phone_home"]
        pat = "%" + value + "%"
        conds, uids = [], set()
        for c in plain_cols:
            if ph.encrypted(c) and (ph.use_encrypted_search or not ph.has_plain(c)):
                kinds = ph.protected[c].get("search") or []
                for kind in ("contains", "prefix", "exact", "phone"):
                    if kind in kinds:
                        try:
                            uids |= self._serve_search(c, {"kind": kind, "value": value})
                        except ServiceError:
                            pass  # a query this kind refuses (too short, not a phone): no match here
                        break
            elif c in ph.columns:
                conds.append(t.c[c].ilike(pat))
        if conds:
            with self.engine.connect() as conn:
                uids |= {r[0] for r in conn.execute(select(t.c.uid).where(or_(*conds)))}
        self.log(f"search by text: {len(uids)} patients; {self._mode(ph)}")
        return self.get_many(sorted(uids), ph)

    def _serve_find(self, column, query, read):
        q = dict(query)
        kind = q.pop("kind")
        try:
            return self.serve.search(TABLE, column, kind, "felicity: patient search", read, **q)
        except ServeError as e:
            raise ServiceError(f"searching patient.{column}: {e}") from None

    def _serve_search(self, column, query):
        keys, _ = self._serve_find(column, query, [])
        return {k["uid"] for k in keys}

    def _with_plain_fields(self, ph, t, found):
        """Patients from serve's rows (protected columns, canonical text)
        and the table's other columns, by uid."""
        plain = [f for f in FIELDS if f not in ph.protected and f in ph.columns]
        with self.engine.connect() as conn:
            rows = {r._mapping["uid"]: dict(r._mapping) for r in
                    conn.execute(select(*[t.c[f] for f in plain]).where(t.c.uid.in_(sorted(found))))}
        out = []
        for uid in sorted(found):
            if uid not in rows:
                continue  # deleted since the search
            p = {f: jsonable(rows[uid].get(f)) for f in FIELDS}
            for col in ph.protected:
                p[col] = found[uid].get(col)
            out.append(p)
        return out

    def _mode(self, ph):
        d = ph.describe()
        return (f"use_encrypted_search={'on' if d['use_encrypted_search'] else 'off'} "
                f"require_encryption={'on' if d['require_encryption'] else 'off'} "
                f"plaintext columns {len(d['plaintext'])}, encrypted columns {len(d['encrypted'])}")


# ----------------------------------------------------------------- values


def canonical_text(v):
    """docs/FORMAT.md §2.4 for the types of this table: text as is, a date
    as YYYY-MM-DD. None is SQL NULL."""
    if v is None:
        return None
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)


def canonical_date(v):
    if v is None or isinstance(v, datetime.date):
        return v
    try:
        return datetime.date.fromisoformat(v)
    except ValueError:
        raise ServiceError("date_of_birth is not YYYY-MM-DD") from None


def jsonable(v):
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return v


def b64(ct):
    return None if ct is None else base64.b64encode(bytes(ct)).decode("ascii")


def decode_assignment(t, name, v):
    """serve's JSON for one assigned column, as the column's type takes it:
    bytea from base64, bigint[] from decimal strings."""
    if v is None:
        return None
    if name not in t.c:
        raise ServiceError(f"pgphi serve assigns column {name}, which patient does not have")
    typ = t.c[name].type
    if isinstance(typ, (BYTEA, LargeBinary)):
        return base64.b64decode(v)
    if isinstance(typ, ARRAY):
        return [int(x) for x in v]
    return v
