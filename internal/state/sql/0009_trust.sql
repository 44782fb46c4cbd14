-- Trust model (THREAT-MODEL.md). Facts that gate or evidence a decision are
-- written only through SECURITY DEFINER functions that set the actor, the
-- time and the snapshot themselves; no role has direct INSERT, UPDATE or
-- DELETE on them. Every definer function pins search_path, qualifies every
-- object, uses no dynamic SQL and casts no type a caller controls.
-- state.Ensure revokes EXECUTE from PUBLIC on every function of schema pgphi
-- except pgphi.flag and pgphi.audit_refusal, at every run.

-- The role on whose behalf a definer function runs: inside one,
-- current_user is the function's owner; the role set by SET ROLE (the one
-- whose privileges the caller was using) is in the GUC "role", and without
-- one the caller is the session's authenticated role.
CREATE FUNCTION pgphi.effective_role() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                THEN pg_catalog.session_user()::text
                ELSE pg_catalog.current_setting('role') END
$$;
REVOKE ALL ON FUNCTION pgphi.effective_role() FROM PUBLIC;

-- Cutover flags, readable by every role (applications, and the invoker
-- trigger of every protected table, which runs as the writing role).
CREATE OR REPLACE FUNCTION pgphi.flag(flag_name text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT f.enabled FROM pgphi.flags f WHERE f.name OPERATOR(pg_catalog.=) flag_name), false)
$$;

-- Flags change only through pgphi (dba): who and when are set here.
CREATE FUNCTION pgphi.flag_set(flag_name text, flag_enabled boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pgphi.flags SET enabled = flag_enabled, updated_at = pg_catalog.now(), updated_by = pgphi.effective_role()
     WHERE name OPERATOR(pg_catalog.=) flag_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgphi: unknown flag' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pgphi.flag_set(text, boolean) FROM PUBLIC;

-- Verification runs: begun and finished only through pgphi, which records
-- who ran it, when it began and the snapshot it began at. Rows recorded
-- before this version (recorded_by NULL) are not trusted as evidence.
ALTER TABLE pgphi.verifications
    ALTER COLUMN finished_at DROP NOT NULL,
    ALTER COLUMN finished_at DROP DEFAULT,
    ALTER COLUMN ok DROP NOT NULL,
    ALTER COLUMN rows_checked DROP NOT NULL,
    ALTER COLUMN values_checked DROP NOT NULL,
    ALTER COLUMN mismatches DROP NOT NULL,
    ALTER COLUMN pending DROP NOT NULL,
    ADD COLUMN recorded_by text;

CREATE FUNCTION pgphi.verification_begin(p_plan_id text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO pgphi.verifications (plan_id, started_at, write_counter, snapshot_xmin, recorded_by)
    SELECT p_plan_id, pg_catalog.clock_timestamp(),
           (s.last_value OPERATOR(pg_catalog.+) s.is_called::int)::numeric,
           pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::numeric,
           pgphi.effective_role()
      FROM pgphi.write_seq s
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION pgphi.verification_begin(text) FROM PUBLIC;

CREATE FUNCTION pgphi.verification_finish(p_id bigint, p_ok boolean, p_rows bigint, p_values bigint, p_mismatches bigint, p_pending bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pgphi.verifications
       SET finished_at = pg_catalog.clock_timestamp(), ok = p_ok, rows_checked = p_rows, values_checked = p_values,
           mismatches = p_mismatches, pending = p_pending
     WHERE id OPERATOR(pg_catalog.=) p_id AND finished_at IS NULL
       AND recorded_by OPERATOR(pg_catalog.=) pgphi.effective_role();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgphi: no verification % begun by this role is open', p_id USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pgphi.verification_finish(bigint, boolean, bigint, bigint, bigint, bigint) FROM PUBLIC;

-- Pre-flight checklists: recorded only through pgphi, with who and when.
ALTER TABLE pgphi.checks ADD COLUMN recorded_by text;
CREATE FUNCTION pgphi.check_record(p_plan_id text, p_ok boolean, p_items jsonb) RETURNS timestamptz
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_at timestamptz;
BEGIN
    INSERT INTO pgphi.checks (plan_id, checked_at, ok, items, recorded_by)
    VALUES (p_plan_id, pg_catalog.clock_timestamp(), p_ok, p_items, pgphi.effective_role())
    RETURNING checked_at INTO v_at;
    RETURN v_at;
END
$$;
REVOKE ALL ON FUNCTION pgphi.check_record(text, boolean, jsonb) FROM PUBLIC;

REVOKE ALL ON FUNCTION pgphi.count_write() FROM PUBLIC;
