-- What pgphi carries over from the plaintext to the ciphertext side, and
-- what cleanup removed with the plaintext, so that rollback can put it back.
--
-- unique_columns: one row per UNIQUE constraint, primary key or unique index
-- on protected columns that pgphi enforces through a <col>_uniq bytea column
-- with a unique index of its own (package unique, docs/FORMAT.md section 5).
-- members are the rule's columns in order; key_id the data key its digest
-- key derives from (recorded once: later digests stay comparable after
-- `keys rotate`); predicate the partial index's predicate as PostgreSQL
-- prints it (NULL: not partial).
CREATE TABLE pgphi.unique_columns (
    table_name         text NOT NULL,
    uniq_column        text NOT NULL,
    object_name        text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('unique', 'primary key', 'unique index')),
    members            text[] NOT NULL CHECK (pg_catalog.cardinality(members) BETWEEN 1 AND 32),
    member_types       text[] NOT NULL,
    nulls_not_distinct boolean NOT NULL DEFAULT false,
    predicate          text,
    index_name         text NOT NULL,
    key_id             integer NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, uniq_column)
);

-- column_rules: CHECK constraints (on the protected column alone) and domain
-- constraints of a protected column, as validation rules pgphi applies to a
-- value when it is sealed and when it is verified. expression is the CHECK
-- expression as PostgreSQL prints it under pgphi's session settings
-- (search_path pg_catalog, so names outside it are qualified); for a domain,
-- the domain type itself (the cast to it checks).
CREATE TABLE pgphi.column_rules (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('check', 'domain')),
    rule_name   text NOT NULL,
    expression  text NOT NULL,
    PRIMARY KEY (table_name, column_name, kind, rule_name)
);

-- removed_objects: what cleanup dropped with the plaintext, recorded in the
-- cleanup transaction before the drop, as the DDL that recreates it (from
-- pg_get_constraintdef, pg_get_indexdef, pg_get_expr, col_description):
-- rollback after cleanup replays it in ordinal order, indexes concurrently.
CREATE TABLE pgphi.removed_objects (
    table_name  text NOT NULL,
    ordinal     integer NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('default', 'comment', 'check', 'unique', 'primary key', 'exclusion', 'index', 'statistics', 'constraint comment', 'index comment')),
    object_name text NOT NULL,
    column_name text,
    definition  text NOT NULL,
    PRIMARY KEY (table_name, ordinal)
);
