-- Audit records and checkpoints are written only by pgphi's own definer
-- functions (audit/FORMAT.md, "Who writes what"). The caller chooses the
-- descriptive fields of a record; the database assigns seq, time, prev,
-- actor.db_role (the effective caller) and db_name, computes the canonical
-- encoding and the hash, and inserts. Nobody keeps a direct INSERT.
--
-- Every function here is SECURITY DEFINER with a pinned search_path,
-- schema-qualifies everything, runs no dynamic SQL and casts no
-- caller-controlled type; EXECUTE is revoked from PUBLIC (audit_refusal is
-- granted back: it is on the PUBLIC list).

-- audit_write stores one record. It is the only code that inserts into
-- pgphi.audit_log; it is reached only through audit_append and
-- audit_refusal (nobody is granted EXECUTE on it).
CREATE FUNCTION pgphi.audit_write(
    p_event text, p_command text, p_run_id text, p_plan_id text,
    p_name text, p_os_user text, p_host text,
    p_environment text, p_db_host text, p_reason text,
    p_tables text[], p_columns text[], p_rows bigint, p_duration_ms bigint,
    p_error_class text, p_details jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- RFC 8785 numbers must stay within ±(2^53-1).
    max_safe constant bigint := 9007199254740991;
    zero constant text := '0000000000000000000000000000000000000000000000000000000000000000';
    v_role text := CASE WHEN pg_catalog.current_setting('role') = 'none'
                        THEN session_user::text
                        ELSE pg_catalog.current_setting('role') END;
    v_db text := pg_catalog.current_database()::text;
    v_now timestamptz;
    v_seq bigint;
    v_head text;
    v_prev text;
    v_details text;
    v_pre text;
    v_post text;
    v_hash text;
    v_full text;
BEGIN
    IF p_event IS NULL OR p_event NOT IN ('start', 'success', 'failure', 'refused') THEN
        RAISE EXCEPTION 'pgphi audit: event must be start, success, failure or refused' USING ERRCODE = '22023';
    END IF;
    IF p_command IS NULL OR p_command = '' THEN
        RAISE EXCEPTION 'pgphi audit: command is empty' USING ERRCODE = '22023';
    END IF;
    IF p_run_id IS NULL OR p_plan_id IS NULL OR p_name IS NULL OR p_os_user IS NULL OR p_host IS NULL
       OR p_environment IS NULL OR p_db_host IS NULL OR p_reason IS NULL OR p_error_class IS NULL
       OR p_tables IS NULL OR p_columns IS NULL OR p_rows IS NULL OR p_duration_ms IS NULL OR p_details IS NULL THEN
        RAISE EXCEPTION 'pgphi audit: a field is null' USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.array_position(p_tables, NULL) IS NOT NULL OR pg_catalog.array_position(p_columns, NULL) IS NOT NULL
       OR pg_catalog.array_ndims(p_tables) > 1 OR pg_catalog.array_ndims(p_columns) > 1 THEN
        RAISE EXCEPTION 'pgphi audit: tables and columns must be lists of strings' USING ERRCODE = '22023';
    END IF;
    IF p_rows < -max_safe OR p_rows > max_safe THEN
        RAISE EXCEPTION 'pgphi audit: rows is outside ±(2^53-1)' USING ERRCODE = '22023';
    END IF;
    IF p_duration_ms < -max_safe OR p_duration_ms > max_safe THEN
        RAISE EXCEPTION 'pgphi audit: duration_ms is outside ±(2^53-1)' USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.jsonb_typeof(p_details) <> 'object' THEN
        RAISE EXCEPTION 'pgphi audit: details must be an object' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_each(p_details) AS d(k, v)
               WHERE pg_catalog.jsonb_typeof(d.v) <> 'string') THEN
        RAISE EXCEPTION 'pgphi audit: a details value is not a string' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(p_details) AS d(k)
               WHERE NOT (d.k COLLATE "C" OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_.-]{0,63}$')) THEN
        RAISE EXCEPTION 'pgphi audit: a details key does not match [a-z][a-z0-9_.-]{0,63}' USING ERRCODE = '22023';
    END IF;

    -- One appender at a time (every pgphi process, every role); under READ
    -- COMMITTED the next statement's snapshot sees the previous appender's
    -- commit. Under a stale snapshot (REPEATABLE READ) the primary key
    -- refuses a duplicate seq instead.
    PERFORM pg_catalog.pg_advisory_xact_lock(8099566048463119476);
    -- The head is the highest seq within JSON's exact integer range. Its
    -- content is not trusted or checked here: a malformed or mis-chained
    -- row is reported by `pgphi audit verify`, it never stops appending.
    -- prev is its hash column, else its record's hash, else 64 zeros, so
    -- that a record is always well-formed.
    SELECT l.seq, CASE WHEN l.hash COLLATE "C" OPERATOR(pg_catalog.~) '^[0-9a-f]{64}$' THEN l.hash
                       ELSE l.record OPERATOR(pg_catalog.->>) 'hash' END
      INTO v_seq, v_head
      FROM pgphi.audit_log AS l
     WHERE l.seq < max_safe
     ORDER BY l.seq DESC LIMIT 1;
    IF v_seq IS NULL THEN
        v_seq := 0;
    END IF;
    v_seq := v_seq + 1;
    v_prev := CASE WHEN v_seq = 1 THEN zero
                   WHEN v_head COLLATE "C" OPERATOR(pg_catalog.~) '^[0-9a-f]{64}$' THEN v_head
                   ELSE zero END;
    v_now := pg_catalog.date_trunc('microseconds', pg_catalog.clock_timestamp());

    -- The canonical encoding (RFC 8785 for this fixed shape, FORMAT.md
    -- section 2): keys in code point order, no whitespace, strings as
    -- to_json(text) writes them, integers in decimal.
    SELECT '{' OPERATOR(pg_catalog.||) COALESCE(pg_catalog.string_agg(
               pg_catalog.to_json(d.k)::text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.to_json(d.v)::text,
               ',' ORDER BY d.k COLLATE "C"), '') OPERATOR(pg_catalog.||) '}'
      INTO v_details
      FROM pg_catalog.jsonb_each_text(p_details) AS d(k, v);
    v_pre := pg_catalog.concat(
        '{"actor":{"db_role":', pg_catalog.to_json(v_role)::text,
        ',"host":', pg_catalog.to_json(p_host)::text,
        ',"name":', pg_catalog.to_json(p_name)::text,
        ',"os_user":', pg_catalog.to_json(p_os_user)::text,
        '},"columns":', (SELECT '[' OPERATOR(pg_catalog.||) COALESCE(pg_catalog.string_agg(pg_catalog.to_json(u.e)::text, ',' ORDER BY u.o), '') OPERATOR(pg_catalog.||) ']'
                           FROM pg_catalog.unnest(p_columns) WITH ORDINALITY AS u(e, o)),
        ',"command":', pg_catalog.to_json(p_command)::text,
        ',"db_host":', pg_catalog.to_json(p_db_host)::text,
        ',"db_name":', pg_catalog.to_json(v_db)::text,
        ',"details":', v_details,
        ',"duration_ms":', p_duration_ms::text,
        ',"environment":', pg_catalog.to_json(p_environment)::text,
        ',"error_class":', pg_catalog.to_json(p_error_class)::text,
        ',"event":', pg_catalog.to_json(p_event)::text);
    v_post := pg_catalog.concat(
        ',"plan_id":', pg_catalog.to_json(p_plan_id)::text,
        ',"prev":', pg_catalog.to_json(v_prev)::text,
        ',"reason":', pg_catalog.to_json(p_reason)::text,
        ',"rows":', p_rows::text,
        ',"run_id":', pg_catalog.to_json(p_run_id)::text,
        ',"seq":', v_seq::text,
        ',"tables":', (SELECT '[' OPERATOR(pg_catalog.||) COALESCE(pg_catalog.string_agg(pg_catalog.to_json(u.e)::text, ',' ORDER BY u.o), '') OPERATOR(pg_catalog.||) ']'
                         FROM pg_catalog.unnest(p_tables) WITH ORDINALITY AS u(e, o)),
        ',"time":', pg_catalog.to_json(pg_catalog.to_char(v_now AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text,
        '}');
    v_hash := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(v_pre OPERATOR(pg_catalog.||) v_post, 'UTF8')), 'hex');
    v_full := pg_catalog.concat(v_pre, ',"hash":', pg_catalog.to_json(v_hash)::text, v_post);
    IF pg_catalog.octet_length(pg_catalog.convert_to(v_full, 'UTF8')) > 65536 THEN
        RAISE EXCEPTION 'pgphi audit: encoded record is larger than 65536 bytes' USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgphi.audit_log (seq, recorded_at, record, hash, prev)
    VALUES (v_seq, v_now, v_full::jsonb, v_hash, v_prev);
    RETURN v_full::jsonb;
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.audit_write(text, text, text, text, text, text, text, text, text, text, text[], text[], bigint, bigint, text, jsonb) FROM PUBLIC;

-- audit_append(p) appends the record whose caller-chosen fields p holds:
-- event, command, run_id, plan_id, actor {name, os_user, host},
-- environment, db_host, reason, tables, columns, rows, duration_ms,
-- error_class, details. Absent fields are empty. Any other key (seq, time,
-- prev, hash, db_name, actor.db_role, ...) is refused: those are the
-- database's. Returns the stored record. Granted by `roles init` to the
-- three pgphi groups.
CREATE FUNCTION pgphi.audit_append(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    chosen constant text[] := ARRAY['event', 'command', 'run_id', 'plan_id', 'actor', 'environment', 'db_host',
        'reason', 'tables', 'columns', 'rows', 'duration_ms', 'error_class', 'details'];
    assigned constant text[] := ARRAY['seq', 'time', 'prev', 'hash', 'db_name'];
    max_safe constant numeric := 9007199254740991;
    k text;
    a jsonb;
    t text[] := ARRAY[]::text[];
    n bigint[] := ARRAY[0, 0]::bigint[];
    tables text[];
    columns text[];
    i int;
BEGIN
    IF p IS NULL OR pg_catalog.jsonb_typeof(p) <> 'object' THEN
        RAISE EXCEPTION 'pgphi.audit_append: the argument must be a JSON object' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(p) LOOP
        IF k = ANY (assigned) THEN
            RAISE EXCEPTION 'pgphi.audit_append: % is assigned by the database, not by the caller', k USING ERRCODE = '42501';
        ELSIF NOT (k = ANY (chosen)) THEN
            RAISE EXCEPTION 'pgphi.audit_append: an unknown field was given' USING ERRCODE = '22023';
        END IF;
    END LOOP;
    a := COALESCE(p -> 'actor', '{}'::jsonb);
    IF pg_catalog.jsonb_typeof(a) <> 'object' THEN
        RAISE EXCEPTION 'pgphi.audit_append: actor must be an object' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(a) LOOP
        IF k = 'db_role' THEN
            RAISE EXCEPTION 'pgphi.audit_append: actor.db_role is assigned by the database, not by the caller' USING ERRCODE = '42501';
        ELSIF NOT (k = ANY (ARRAY['name', 'os_user', 'host'])) THEN
            RAISE EXCEPTION 'pgphi.audit_append: an unknown actor field was given' USING ERRCODE = '22023';
        END IF;
    END LOOP;
    -- Strings: event, command, run_id, plan_id, environment, db_host,
    -- reason, error_class, actor.name, actor.os_user, actor.host.
    FOR i IN 1..11 LOOP
        DECLARE
            v jsonb := CASE i WHEN 1 THEN p -> 'event' WHEN 2 THEN p -> 'command' WHEN 3 THEN p -> 'run_id'
                WHEN 4 THEN p -> 'plan_id' WHEN 5 THEN p -> 'environment' WHEN 6 THEN p -> 'db_host'
                WHEN 7 THEN p -> 'reason' WHEN 8 THEN p -> 'error_class' WHEN 9 THEN a -> 'name'
                WHEN 10 THEN a -> 'os_user' ELSE a -> 'host' END;
        BEGIN
            IF v IS NULL THEN
                t := t OPERATOR(pg_catalog.||) ''::text;
            ELSIF pg_catalog.jsonb_typeof(v) = 'string' THEN
                t := t OPERATOR(pg_catalog.||) (v OPERATOR(pg_catalog.#>>) '{}'::text[]);
            ELSE
                RAISE EXCEPTION 'pgphi.audit_append: a text field is not a JSON string' USING ERRCODE = '22023';
            END IF;
        END;
    END LOOP;
    FOR i IN 1..2 LOOP
        DECLARE
            v jsonb := CASE i WHEN 1 THEN p -> 'rows' ELSE p -> 'duration_ms' END;
            x numeric;
        BEGIN
            IF v IS NOT NULL THEN
                IF pg_catalog.jsonb_typeof(v) <> 'number' THEN
                    RAISE EXCEPTION 'pgphi.audit_append: rows and duration_ms must be JSON integers' USING ERRCODE = '22023';
                END IF;
                x := (v OPERATOR(pg_catalog.#>>) '{}'::text[])::numeric;
                IF x <> pg_catalog.trunc(x) OR x < -max_safe OR x > max_safe THEN
                    RAISE EXCEPTION 'pgphi.audit_append: rows and duration_ms must be integers within ±(2^53-1)' USING ERRCODE = '22023';
                END IF;
                n[i] := x::bigint;
            END IF;
        END;
    END LOOP;
    FOR i IN 1..2 LOOP
        DECLARE
            v jsonb := CASE i WHEN 1 THEN p -> 'tables' ELSE p -> 'columns' END;
            l text[] := ARRAY[]::text[];
        BEGIN
            IF v IS NOT NULL THEN
                IF pg_catalog.jsonb_typeof(v) <> 'array' OR EXISTS (
                    SELECT 1 FROM pg_catalog.jsonb_array_elements(v) AS e(x) WHERE pg_catalog.jsonb_typeof(e.x) <> 'string') THEN
                    RAISE EXCEPTION 'pgphi.audit_append: tables and columns must be arrays of strings' USING ERRCODE = '22023';
                END IF;
                SELECT COALESCE(pg_catalog.array_agg(e.x ORDER BY e.o), ARRAY[]::text[]) INTO l
                  FROM pg_catalog.jsonb_array_elements_text(v) WITH ORDINALITY AS e(x, o);
            END IF;
            IF i = 1 THEN tables := l; ELSE columns := l; END IF;
        END;
    END LOOP;
    RETURN pgphi.audit_write(t[1], t[2], t[3], t[4], t[9], t[10], t[11], t[5], t[6], t[7],
        tables, columns, n[1], n[2], t[8], COALESCE(p -> 'details', '{}'::jsonb));
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.audit_append(jsonb) FROM PUBLIC;

-- audit_refusal(command) records that the calling role was refused: for a
-- role that is a member of no pgphi group (so it cannot call audit_append).
-- The caller chooses only the command, from pgphi's fixed list ("unknown"
-- otherwise); everything else is fixed or assigned. On the PUBLIC list.
CREATE FUNCTION pgphi.audit_refusal(p_command text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    commands constant text[] := ARRAY['init', 'plan', 'status', 'check', 'flags', 'flags set', 'keys',
        'keys init', 'keys list', 'keys rotate', 'pins', 'pins show', 'pins set', 'apply', 'cleanup', 'rollback', 'migrate', 'roles', 'roles init', 'approve', 'search',
        'verify', 'audit', 'audit verify', 'audit export', 'audit archive', 'audit checkpoint', 'report',
        'serve', 'backup', 'reindex', 'decrypt', 'encrypt'];
    v_command text := CASE WHEN p_command = ANY (commands) THEN p_command ELSE 'unknown' END;
BEGIN
    PERFORM pgphi.audit_write('refused', v_command,
        pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), '', '', '', '', '', '', '',
        ARRAY[]::text[], ARRAY[]::text[], 0, 0, 'policy: access denied', '{}'::jsonb);
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.audit_refusal(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgphi.audit_refusal(text) TO PUBLIC;

-- audit_checkpoint_record stores a signed checkpoint, only when seq and
-- hash are those of the stored chain at that seq (so no bogus row can be
-- recorded through it) and the signing time lies between that record's time
-- and now. The signature itself is checked by `pgphi audit verify` with the
-- auditor's public key (PostgreSQL has no Ed25519). Granted by `roles init`
-- to pgphi_audit_officer and pgphi_dba.
CREATE FUNCTION pgphi.audit_checkpoint_record(p_seq bigint, p_hash text, p_signed_at timestamptz,
    p_key_fingerprint text, p_signature text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_at timestamptz;
BEGIN
    IF p_seq IS NULL OR p_hash IS NULL OR p_signed_at IS NULL OR p_key_fingerprint IS NULL OR p_signature IS NULL THEN
        RAISE EXCEPTION 'pgphi.audit_checkpoint_record: a field is null' USING ERRCODE = '22023';
    END IF;
    IF NOT (p_hash COLLATE "C" OPERATOR(pg_catalog.~) '^[0-9a-f]{64}$')
       OR NOT (p_key_fingerprint COLLATE "C" OPERATOR(pg_catalog.~) '^SHA256:[A-Za-z0-9+/]{43}$')
       OR NOT (p_signature COLLATE "C" OPERATOR(pg_catalog.~) '^[A-Za-z0-9+/]{86}==$') THEN
        RAISE EXCEPTION 'pgphi.audit_checkpoint_record: hash, key fingerprint or signature is not in its format' USING ERRCODE = '22023';
    END IF;
    SELECT l.recorded_at INTO v_at FROM pgphi.audit_log AS l
     WHERE l.seq = p_seq AND l.hash = p_hash AND l.record OPERATOR(pg_catalog.->>) 'hash' = p_hash;
    IF v_at IS NULL THEN
        RAISE EXCEPTION 'pgphi.audit_checkpoint_record: the log has no record % with that hash', p_seq USING ERRCODE = '22023';
    END IF;
    IF p_signed_at < v_at OR p_signed_at > pg_catalog.clock_timestamp() + interval '5 minutes' THEN
        RAISE EXCEPTION 'pgphi.audit_checkpoint_record: the signing time is before the record or in the future' USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgphi.audit_checkpoints (seq, hash, signed_at, key_fingerprint, signature)
    VALUES (p_seq, p_hash, p_signed_at, p_key_fingerprint, p_signature);
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.audit_checkpoint_record(bigint, text, timestamptz, text, text) FROM PUBLIC;

-- No role keeps a direct write on the audit tables (the owner excepted, who
-- is trusted and detected: THREAT-MODEL.md). `roles init` no longer grants
-- INSERT; this revokes what earlier versions granted, from every grantee.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pgphi.audit_log, pgphi.audit_checkpoints FROM PUBLIC;
DO $do$
DECLARE
    g text;
BEGIN
    FOR g IN
        SELECT DISTINCT a.grantee::regrole::text
          FROM pg_catalog.pg_class AS c, LATERAL pg_catalog.aclexplode(c.relacl) AS a
         WHERE c.oid IN ('pgphi.audit_log'::regclass, 'pgphi.audit_checkpoints'::regclass)
           AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
           AND a.grantee <> 0 AND a.grantee <> c.relowner
    LOOP
        EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pgphi.audit_log, pgphi.audit_checkpoints FROM %s', g);
    END LOOP;
    -- The default group names, even when they hold nothing yet.
    FOR g IN SELECT r.rolname::text FROM pg_catalog.pg_roles AS r
              WHERE r.rolname IN ('pgphi_healthcare_admin', 'pgphi_audit_officer', 'pgphi_dba')
    LOOP
        EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON pgphi.audit_log, pgphi.audit_checkpoints FROM %I', g);
    END LOOP;
END
$do$;
