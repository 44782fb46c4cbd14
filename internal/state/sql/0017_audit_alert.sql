-- Alerts: a long command records each alert threshold it crosses (failure
-- rate, response time, storage, search accuracy) as an audit record of its
-- own, event 'alert', between the run's start and end records. The record
-- holds the threshold, the measured number and its limit in details, and
-- the table's name: never a value. audit_write is replaced with the one
-- change of accepting that event (same signature, owner and grants: none).
CREATE OR REPLACE FUNCTION pgphi.audit_write(
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
    IF p_event IS NULL OR p_event NOT IN ('start', 'success', 'failure', 'refused', 'alert') THEN
        RAISE EXCEPTION 'pgphi audit: event must be start, success, failure, refused or alert' USING ERRCODE = '22023';
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
