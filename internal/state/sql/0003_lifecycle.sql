-- Cutover flags, readable by applications with one query:
--   SELECT pgphi.flag('use_encrypted_search');
CREATE TABLE pgphi.flags (
    name        text PRIMARY KEY CHECK (name IN ('use_encrypted_search', 'migration_complete', 'require_encryption')),
    enabled     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz,
    updated_by  text
);
INSERT INTO pgphi.flags (name) VALUES ('use_encrypted_search'), ('migration_complete'), ('require_encryption');

CREATE FUNCTION pgphi.flag(flag_name text) RETURNS boolean
    LANGUAGE sql STABLE AS $$ SELECT COALESCE((SELECT enabled FROM pgphi.flags WHERE name = flag_name), false) $$;

-- Lifecycle of each protected column: expanded (plaintext and ciphertext side
-- by side) or cleaned (plaintext dropped and purged).
ALTER TABLE pgphi.protected_columns
    ADD COLUMN phase text NOT NULL DEFAULT 'expanded' CHECK (phase IN ('expanded', 'cleaned', 'restoring')),
    ADD COLUMN index_column text,
    ADD COLUMN cleaned_at timestamptz,
    ADD COLUMN purged_at timestamptz;

-- Verification runs, so cleanup can require one that passed after the last write.
CREATE TABLE pgphi.verifications (
    id            bigserial PRIMARY KEY,
    plan_id       text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    ok            boolean NOT NULL,
    rows_checked  bigint NOT NULL,
    values_checked bigint NOT NULL,
    mismatches    bigint NOT NULL,
    pending       bigint NOT NULL,
    write_counter numeric NOT NULL   -- position of pgphi.write_seq when the verification started
);

-- Every application write to a protected table (seen by pgphi's trigger)
-- advances this sequence: cheap, non-transactional, and no row to contend on.
CREATE SEQUENCE pgphi.write_seq;
