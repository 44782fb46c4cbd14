-- pgphi's own state. Nothing here is PHI: wrapped keys, plan specs (names and
-- types only), progress checkpoints (primary keys only) and failure records.
CREATE TABLE pgphi.kek (
    id         int PRIMARY KEY CHECK (id = 1),
    kind       text NOT NULL CHECK (kind IN ('passphrase', 'keyfile')),
    salt       bytea,
    iterations int,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgphi.data_keys (
    key_id     int PRIMARY KEY CHECK (key_id > 0),
    wrapped    bytea NOT NULL,
    state      text NOT NULL CHECK (state IN ('active', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX data_keys_one_active ON pgphi.data_keys ((true)) WHERE state = 'active';

CREATE TABLE pgphi.plans (
    plan_id      text PRIMARY KEY,
    spec         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

-- One row per protected table of a plan: what was added, and the backfill state.
CREATE TABLE pgphi.plan_tables (
    plan_id        text NOT NULL REFERENCES pgphi.plans,
    table_name     text NOT NULL,
    chunked_at     timestamptz,
    rows_at_start  bigint,
    backfilled_at  timestamptz,
    PRIMARY KEY (plan_id, table_name)
);

-- Units of backfill work. A worker locks a chunk row FOR UPDATE SKIP LOCKED for
-- the length of one batch transaction, and moves its checkpoint in that same
-- transaction: a crash rolls both back together.
CREATE TABLE pgphi.chunks (
    plan_id     text NOT NULL,
    table_name  text NOT NULL,
    chunk_no    int  NOT NULL,
    lower_key   text[],          -- exclusive; NULL: from the first row
    upper_key   text[],          -- inclusive; NULL: to the last row
    checkpoint  text[],          -- last key done; NULL: nothing done yet
    rows_done   bigint NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false,
    worker      text,
    updated_at  timestamptz,
    PRIMARY KEY (plan_id, table_name, chunk_no),
    FOREIGN KEY (plan_id, table_name) REFERENCES pgphi.plan_tables
);
CREATE INDEX chunks_open ON pgphi.chunks (plan_id, table_name, chunk_no) WHERE NOT done;

-- Values that could not be encrypted. Primary key and error class only, never the value.
CREATE TABLE pgphi.failures (
    id           bigserial PRIMARY KEY,
    plan_id      text NOT NULL,
    table_name   text NOT NULL,
    column_name  text NOT NULL,
    primary_key  text[] NOT NULL,
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);

-- What pgphi added to application tables, so that rollback can remove exactly that.
CREATE TABLE pgphi.protected_columns (
    table_name        text NOT NULL,
    column_name       text NOT NULL,
    encrypted_column  text NOT NULL,
    original_type     text NOT NULL,
    class             text NOT NULL,
    plan_id           text NOT NULL,
    added_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
