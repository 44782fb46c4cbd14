-- Pins (package policy, pins.go): the security decisions that must not come
-- from the operator's YAML: environment, approval policy, signers (name,
-- role, database role, key), group role names, allow_superuser and the audit
-- public key. One row per version; the current pins are the highest seq.
-- The document is canonical JSON written by pgphi; pins_id is "pins-" and
-- the first 24 hex digits of its SHA-256, the id approvals of a change sign.
-- Written only through pins_initial (when nothing is pinned) and
-- pins_replace (dba; pgphi checks the approvals under the current pins
-- first: the dba administers this schema and is trusted with it, see
-- THREAT-MODEL.md).
CREATE TABLE pgphi.pins (
    seq        bigint PRIMARY KEY CHECK (seq > 0),
    pins_id    text NOT NULL,
    body       text NOT NULL,
    pinned_at  timestamptz NOT NULL,
    pinned_by  text NOT NULL
);

CREATE FUNCTION pgphi.pins_initial(p_body text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id text;
BEGIN
    IF p_body IS NULL OR pg_catalog.length(p_body) OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION 'pgphi pins: empty or too long' USING ERRCODE = '22023';
    END IF;
    PERFORM p_body::jsonb;
    PERFORM pg_catalog.pg_advisory_xact_lock(8099566047906557555);
    IF EXISTS (SELECT 1 FROM pgphi.pins) THEN
        RAISE EXCEPTION 'pgphi pins: already pinned; change them with pgphi pins set --from-config' USING ERRCODE = '55000';
    END IF;
    v_id := 'pins-' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_body, 'UTF8')), 'hex'), 24);
    INSERT INTO pgphi.pins (seq, pins_id, body, pinned_at, pinned_by)
    VALUES (1, v_id, p_body, pg_catalog.clock_timestamp(),
            CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                 THEN pg_catalog.session_user()::text ELSE pg_catalog.current_setting('role') END);
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION pgphi.pins_initial(text) FROM PUBLIC;

-- pins_replace stores a new version after p_seq (the version whose approval
-- policy pgphi checked); it refuses if the pins changed meanwhile.
CREATE FUNCTION pgphi.pins_replace(p_seq bigint, p_body text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id text;
    v_head bigint;
BEGIN
    IF p_body IS NULL OR pg_catalog.length(p_body) OPERATOR(pg_catalog.>) 1000000 THEN
        RAISE EXCEPTION 'pgphi pins: empty or too long' USING ERRCODE = '22023';
    END IF;
    PERFORM p_body::jsonb;
    PERFORM pg_catalog.pg_advisory_xact_lock(8099566047906557555);
    SELECT pg_catalog.max(seq) INTO v_head FROM pgphi.pins;
    IF v_head IS NULL OR p_seq IS NULL OR v_head OPERATOR(pg_catalog.<>) p_seq THEN
        RAISE EXCEPTION 'pgphi pins: the pins changed meanwhile; run the command again' USING ERRCODE = '40001';
    END IF;
    v_id := 'pins-' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_body, 'UTF8')), 'hex'), 24);
    INSERT INTO pgphi.pins (seq, pins_id, body, pinned_at, pinned_by)
    VALUES (p_seq OPERATOR(pg_catalog.+) 1, v_id, p_body, pg_catalog.clock_timestamp(),
            CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                 THEN pg_catalog.session_user()::text ELSE pg_catalog.current_setting('role') END);
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION pgphi.pins_replace(bigint, text) FROM PUBLIC;

-- Approvals, version 2: the signed message binds the plan id, the command,
-- the environment, the database (cluster system identifier and name) and an
-- expiry ("pgphi-approval-v2\n" ..., policy/approvals.go). Rows of version 1
-- stay for the record but count for nothing. A row is identified by plan id,
-- key and a hash of the signature, so a bad row never stands in the way of a
-- good one; pgphi verifies every row at use and ignores those that fail.
ALTER TABLE pgphi.approvals
    ADD COLUMN version int NOT NULL DEFAULT 1,
    ADD COLUMN command text NOT NULL DEFAULT '',
    ADD COLUMN system_identifier text NOT NULL DEFAULT '',
    ADD COLUMN database_name text NOT NULL DEFAULT '',
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN signature_hash text NOT NULL GENERATED ALWAYS AS (pg_catalog.encode(pg_catalog.sha256(signature), 'hex')) STORED;
ALTER TABLE pgphi.approvals
    ALTER COLUMN signed_at DROP DEFAULT,
    ALTER COLUMN recorded_by DROP DEFAULT,
    DROP CONSTRAINT approvals_pkey,
    ADD PRIMARY KEY (plan_id, fingerprint, signature_hash);

-- approval_record stores one signed approval; the signature is verified by
-- pgphi when approvals are checked, not here. signed_at and recorded_by are
-- set here. Recording the same signature again returns the stored time.
CREATE FUNCTION pgphi.approval_record(
    p_plan_id text, p_command text, p_environment text, p_system_identifier text, p_database text,
    p_expires_at timestamptz, p_signer text, p_role text, p_fingerprint text, p_signature bytea)
    RETURNS timestamptz
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_at timestamptz;
    v_hash text;
BEGIN
    IF p_plan_id IS NULL OR p_command IS NULL OR p_environment IS NULL OR p_system_identifier IS NULL
       OR p_database IS NULL OR p_expires_at IS NULL OR p_signer IS NULL OR p_role IS NULL
       OR p_fingerprint IS NULL OR p_signature IS NULL THEN
        RAISE EXCEPTION 'pgphi approval: a field is null' USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.length(p_plan_id) OPERATOR(pg_catalog.>) 200 OR pg_catalog.length(p_command) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.length(p_environment) OPERATOR(pg_catalog.>) 200 OR pg_catalog.length(p_system_identifier) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.length(p_database) OPERATOR(pg_catalog.>) 200 OR pg_catalog.length(p_signer) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.length(p_fingerprint) OPERATOR(pg_catalog.>) 200 THEN
        RAISE EXCEPTION 'pgphi approval: a field is longer than 200 characters' USING ERRCODE = '22023';
    END IF;
    IF p_database OPERATOR(pg_catalog.<>) pg_catalog.current_database()::text THEN
        RAISE EXCEPTION 'pgphi approval: the approval is for another database' USING ERRCODE = '22023';
    END IF;
    v_hash := pg_catalog.encode(pg_catalog.sha256(p_signature), 'hex');
    INSERT INTO pgphi.approvals (plan_id, environment, signer, role, fingerprint, signed_at, signature, recorded_by,
                                 version, command, system_identifier, database_name, expires_at)
    VALUES (p_plan_id, p_environment, p_signer, p_role, p_fingerprint, pg_catalog.clock_timestamp(), p_signature,
            CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                 THEN pg_catalog.session_user()::text ELSE pg_catalog.current_setting('role') END,
            2, p_command, p_system_identifier, p_database, p_expires_at)
    ON CONFLICT (plan_id, fingerprint, signature_hash) DO NOTHING
    RETURNING signed_at INTO v_at;
    IF v_at IS NULL THEN
        SELECT a.signed_at INTO v_at FROM pgphi.approvals a
         WHERE a.plan_id OPERATOR(pg_catalog.=) p_plan_id AND a.fingerprint OPERATOR(pg_catalog.=) p_fingerprint
           AND a.signature_hash OPERATOR(pg_catalog.=) v_hash;
    END IF;
    RETURN v_at;
END
$$;
REVOKE ALL ON FUNCTION pgphi.approval_record(text, text, text, text, text, timestamptz, text, text, text, bytea) FROM PUBLIC;

-- Nobody writes approvals or pins directly (the owner aside): upgrades lose
-- the INSERT earlier versions granted.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid IN ('pgphi.approvals'::regclass, 'pgphi.pins'::regclass)
                AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
                AND a.grantee <> c.relowner
    LOOP
        IF r.grantee = 0 THEN
            EXECUTE 'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pgphi.approvals, pgphi.pins FROM PUBLIC';
        ELSE
            EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pgphi.approvals, pgphi.pins FROM %I',
                (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = r.grantee));
        END IF;
    END LOOP;
END
$$;
