-- The history of the application's schema migrations (`pgphi migrate`): one
-- row per migration version, its state and the evidence of its last run.
-- Written only through the definer functions below, which the dba group may
-- execute; every group may read it (status, reports).
--   state: running (a non-transactional migration in progress, or one whose
--          runner died), failed, applied, baseline (adopted, never run by
--          pgphi), reverted (rolled down; the row keeps the evidence).
--   statement_hashes: SHA-256 of each statement done so far, in order; a
--          non-transactional migration resumes after them only when the
--          file's statements still hash the same.
--   error_class: SQLSTATE or a fixed kind, never a message or a value.
CREATE TABLE pgphi.migrations (
    version           bigint PRIMARY KEY CHECK (version >= 0),
    name              text NOT NULL CHECK (length(name) <= 200),
    sha256            text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    state             text NOT NULL CHECK (state IN ('running', 'failed', 'applied', 'baseline', 'reverted')),
    transactional     boolean NOT NULL,
    statements_total  integer NOT NULL CHECK (statements_total >= 0),
    statements_done   integer NOT NULL DEFAULT 0,
    statement_hashes  text[] NOT NULL DEFAULT '{}',
    rows_affected     bigint NOT NULL DEFAULT 0,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    duration_ms       bigint,
    applied_by_role   text NOT NULL,
    applied_by_actor  text NOT NULL CHECK (length(applied_by_actor) <= 200),
    error_class       text CHECK (error_class ~ '^(SQLSTATE [0-9A-Z]{5}|[a-z][a-z :-]{0,63})$'),
    failed_statement  integer,
    source            text NOT NULL DEFAULT 'pgphi' CHECK (source IN ('pgphi', 'baseline', 'golang-migrate', 'flyway'))
);

-- migration_role is the effective caller: the role set with SET ROLE, else
-- the session's login role (inside a definer function current_user is the
-- owner).
CREATE FUNCTION pgphi.migration_role() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                THEN pg_catalog.session_user()::text ELSE pg_catalog.current_setting('role') END
$fn$;
REVOKE ALL ON FUNCTION pgphi.migration_role() FROM PUBLIC;

-- migration_begin starts (or resumes) a run of one migration: state running,
-- time, role and actor set here. A migration already applied or adopted is
-- refused. A failed or interrupted one resumes only if p_done_hashes, the
-- hashes of the file's first statements now, begin with the hashes recorded
-- as done; otherwise it is refused (the file changed under what ran).
CREATE FUNCTION pgphi.migration_begin(p_version bigint, p_name text, p_sha256 text, p_transactional boolean,
    p_statements integer, p_actor text, p_hashes text[]) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r pgphi.migrations%ROWTYPE;
BEGIN
    IF p_version IS NULL OR p_name IS NULL OR p_sha256 IS NULL OR p_transactional IS NULL OR p_statements IS NULL
       OR p_actor IS NULL OR p_hashes IS NULL THEN
        RAISE EXCEPTION 'pgphi.migration_begin: a field is null' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM pgphi.migrations m WHERE m.version OPERATOR(pg_catalog.=) p_version FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO pgphi.migrations (version, name, sha256, state, transactional, statements_total,
                                      started_at, applied_by_role, applied_by_actor)
        VALUES (p_version, p_name, p_sha256, 'running', p_transactional, p_statements,
                pg_catalog.clock_timestamp(), pgphi.migration_role(), p_actor);
        RETURN 0;
    END IF;
    IF r.state OPERATOR(pg_catalog.=) ANY (ARRAY['applied', 'baseline']) THEN
        RAISE EXCEPTION 'pgphi.migration_begin: migration % is already applied', p_version USING ERRCODE = '55000';
    END IF;
    IF r.state OPERATOR(pg_catalog.=) 'reverted' THEN
        r.statements_done := 0;
        r.statement_hashes := '{}';
    END IF;
    IF r.statements_done OPERATOR(pg_catalog.>) 0
       AND (pg_catalog.cardinality(p_hashes) OPERATOR(pg_catalog.<) r.statements_done
            OR p_hashes[1:r.statements_done] OPERATOR(pg_catalog.<>) r.statement_hashes) THEN
        RAISE EXCEPTION 'pgphi.migration_begin: the statements of migration % that already ran have changed', p_version
            USING ERRCODE = '55000';
    END IF;
    UPDATE pgphi.migrations m SET name = p_name, sha256 = p_sha256, state = 'running', transactional = p_transactional,
        statements_total = p_statements, statements_done = r.statements_done, statement_hashes = r.statement_hashes,
        rows_affected = CASE WHEN r.state OPERATOR(pg_catalog.=) 'reverted' THEN 0 ELSE m.rows_affected END,
        started_at = pg_catalog.clock_timestamp(), finished_at = NULL, duration_ms = NULL,
        applied_by_role = pgphi.migration_role(), applied_by_actor = p_actor, error_class = NULL, failed_statement = NULL,
        source = 'pgphi'
     WHERE m.version OPERATOR(pg_catalog.=) p_version;
    RETURN r.statements_done;
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.migration_begin(bigint, text, text, boolean, integer, text, text[]) FROM PUBLIC;

-- migration_step records that statement p_index (1-based, the next one) of a
-- running migration is done, with its hash and row count.
CREATE FUNCTION pgphi.migration_step(p_version bigint, p_index integer, p_hash text, p_rows bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_hash IS NULL OR NOT (p_hash COLLATE "C" OPERATOR(pg_catalog.~) '^[0-9a-f]{64}$') OR p_rows IS NULL OR p_rows OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION 'pgphi.migration_step: bad hash or row count' USING ERRCODE = '22023';
    END IF;
    UPDATE pgphi.migrations m SET statements_done = m.statements_done OPERATOR(pg_catalog.+) 1,
        statement_hashes = m.statement_hashes OPERATOR(pg_catalog.||) p_hash,
        rows_affected = m.rows_affected OPERATOR(pg_catalog.+) p_rows
     WHERE m.version OPERATOR(pg_catalog.=) p_version AND m.state OPERATOR(pg_catalog.=) 'running'
       AND m.statements_done OPERATOR(pg_catalog.+) 1 OPERATOR(pg_catalog.=) p_index;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgphi.migration_step: migration % is not running at statement %', p_version, p_index USING ERRCODE = '55000';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.migration_step(bigint, integer, text, bigint) FROM PUBLIC;

-- migration_finish ends a run: applied (all statements done; p_hashes are
-- all statement hashes for a transactional migration, whose statements are
-- recorded here at once, inside its own transaction) or failed (with an
-- error class and the failed statement). Duration and time are set here.
CREATE FUNCTION pgphi.migration_finish(p_version bigint, p_outcome text, p_error_class text, p_failed_statement integer,
    p_hashes text[], p_rows bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r pgphi.migrations%ROWTYPE;
BEGIN
    IF p_outcome IS NULL OR p_outcome OPERATOR(pg_catalog.<>) ALL (ARRAY['applied', 'failed']) THEN
        RAISE EXCEPTION 'pgphi.migration_finish: outcome must be applied or failed' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM pgphi.migrations m WHERE m.version OPERATOR(pg_catalog.=) p_version FOR UPDATE;
    IF NOT FOUND OR r.state OPERATOR(pg_catalog.<>) 'running' THEN
        RAISE EXCEPTION 'pgphi.migration_finish: migration % is not running', p_version USING ERRCODE = '55000';
    END IF;
    IF r.transactional AND p_outcome OPERATOR(pg_catalog.=) 'applied' THEN
        IF p_hashes IS NULL OR pg_catalog.cardinality(p_hashes) OPERATOR(pg_catalog.<>) r.statements_total
           OR EXISTS (SELECT 1 FROM pg_catalog.unnest(p_hashes) h(x) WHERE NOT (h.x COLLATE "C" OPERATOR(pg_catalog.~) '^[0-9a-f]{64}$')) THEN
            RAISE EXCEPTION 'pgphi.migration_finish: a hash per statement is needed' USING ERRCODE = '22023';
        END IF;
        r.statement_hashes := p_hashes;
        r.statements_done := r.statements_total;
        r.rows_affected := CASE WHEN COALESCE(p_rows, 0) OPERATOR(pg_catalog.<) 0 THEN 0 ELSE COALESCE(p_rows, 0) END;
    END IF;
    IF p_outcome OPERATOR(pg_catalog.=) 'applied' AND r.statements_done OPERATOR(pg_catalog.<>) r.statements_total THEN
        RAISE EXCEPTION 'pgphi.migration_finish: migration % ran % of % statements', p_version, r.statements_done, r.statements_total
            USING ERRCODE = '55000';
    END IF;
    UPDATE pgphi.migrations m SET state = p_outcome, statements_done = r.statements_done, statement_hashes = r.statement_hashes,
        rows_affected = r.rows_affected, finished_at = pg_catalog.clock_timestamp(),
        duration_ms = (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) r.started_at) OPERATOR(pg_catalog.*) 1000)::bigint,
        error_class = CASE WHEN p_outcome OPERATOR(pg_catalog.=) 'failed' THEN COALESCE(p_error_class, 'error') END,
        failed_statement = CASE WHEN p_outcome OPERATOR(pg_catalog.=) 'failed' THEN p_failed_statement END
     WHERE m.version OPERATOR(pg_catalog.=) p_version;
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.migration_finish(bigint, text, text, integer, text[], bigint) FROM PUBLIC;

-- migration_revert marks an applied migration rolled down (its down file
-- ran in the caller's transaction, so this commits with it).
CREATE FUNCTION pgphi.migration_revert(p_version bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE pgphi.migrations m SET state = 'reverted', finished_at = pg_catalog.clock_timestamp(),
        applied_by_role = pgphi.migration_role()
     WHERE m.version OPERATOR(pg_catalog.=) p_version AND m.state OPERATOR(pg_catalog.=) ANY (ARRAY['applied', 'baseline', 'failed']);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgphi.migration_revert: migration % is not applied', p_version USING ERRCODE = '55000';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.migration_revert(bigint) FROM PUBLIC;

-- migration_baseline records a migration as adopted: applied elsewhere
-- (by hand, golang-migrate or Flyway), never run by pgphi. Only a version
-- with no row yet, or a reverted one, may be adopted.
CREATE FUNCTION pgphi.migration_baseline(p_version bigint, p_name text, p_sha256 text, p_source text, p_actor text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_version IS NULL OR p_name IS NULL OR p_sha256 IS NULL OR p_source IS NULL OR p_actor IS NULL THEN
        RAISE EXCEPTION 'pgphi.migration_baseline: a field is null' USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgphi.migrations (version, name, sha256, state, transactional, statements_total, started_at,
                                  finished_at, applied_by_role, applied_by_actor, source)
    VALUES (p_version, p_name, p_sha256, 'baseline', true, 0, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp(),
            pgphi.migration_role(), p_actor, p_source)
    ON CONFLICT (version) DO UPDATE SET name = excluded.name, sha256 = excluded.sha256, state = 'baseline',
        statements_total = 0, statements_done = 0, statement_hashes = '{}', rows_affected = 0,
        started_at = excluded.started_at, finished_at = excluded.finished_at, duration_ms = NULL,
        applied_by_role = excluded.applied_by_role, applied_by_actor = excluded.applied_by_actor,
        error_class = NULL, failed_statement = NULL, source = excluded.source
     WHERE pgphi.migrations.state OPERATOR(pg_catalog.=) 'reverted';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgphi.migration_baseline: migration % already has a history', p_version USING ERRCODE = '55000';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.migration_baseline(bigint, text, text, text, text) FROM PUBLIC;
