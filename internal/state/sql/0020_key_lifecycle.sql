-- Key lifecycle and backups: how many encryptions each data key has made,
-- which backups exist and which were verified by restoring them.

-- Encryptions per data key. AES-GCM with random 96-bit nonces is limited to
-- 2^32 encryptions per key (NIST SP 800-38D, 8.3); pgphi's writers reserve
-- counts here before they seal (backfill once per batch, the application API
-- in blocks), so the count can only be too high, never too low. No foreign
-- key: the count of a retired key stays as evidence.
CREATE TABLE pgphi.key_usage (
    key_id      int PRIMARY KEY CHECK (key_id > 0),
    encryptions bigint NOT NULL DEFAULT 0 CHECK (encryptions >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- key_usage_add(key, n) adds n (1 .. 2^31) encryptions to an existing data
-- key's count, saturating at 2^62, and returns the new count. On the PUBLIC
-- list: application writers seal through the application API under their own
-- role. A caller chooses only which existing key and how many; the worst it
-- can do is make the count too high (pgphi then asks for a rotation early).
-- A key that no longer exists (retired and destroyed) is refused, so no
-- writer can reserve encryptions under it.
CREATE FUNCTION pgphi.key_usage_add(p_key_id int, p_n bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v bigint;
BEGIN
    IF p_key_id IS NULL OR p_n IS NULL OR p_n OPERATOR(pg_catalog.<) 1 OR p_n OPERATOR(pg_catalog.>) 2147483648 THEN
        RAISE EXCEPTION 'pgphi.key_usage_add: n must be between 1 and 2^31' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgphi.data_keys d WHERE d.key_id OPERATOR(pg_catalog.=) p_key_id) THEN
        RAISE EXCEPTION 'pgphi: data key % does not exist (it was retired): load the keys again', p_key_id USING ERRCODE = '55000';
    END IF;
    INSERT INTO pgphi.key_usage AS u (key_id, encryptions, updated_at)
    VALUES (p_key_id, p_n, pg_catalog.clock_timestamp())
    ON CONFLICT (key_id) DO UPDATE
       SET encryptions = CASE WHEN u.encryptions OPERATOR(pg_catalog.>) (4611686018427387904::bigint OPERATOR(pg_catalog.-) p_n)
                              THEN 4611686018427387904::bigint ELSE u.encryptions OPERATOR(pg_catalog.+) p_n END,
           updated_at = pg_catalog.clock_timestamp()
    RETURNING u.encryptions INTO v;
    RETURN v;
END
$$;
REVOKE ALL ON FUNCTION pgphi.key_usage_add(int, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgphi.key_usage_add(int, bigint) TO PUBLIC;

-- Backups taken by pgphi (the file is elsewhere; this is its signed
-- manifest's digest and what it needs), and their verifications by
-- restoring them. Written only through backup_record and backup_verified.
CREATE TABLE pgphi.backups (
    backup_id        text PRIMARY KEY CHECK (backup_id ~ '^[0-9a-f]{32}$'),
    taken_at         timestamptz NOT NULL,
    recorded_by      text NOT NULL,
    format           text NOT NULL CHECK (format IN ('tink-aes256-gcm-hkdf-1mb', 'age')),
    plan_id          text NOT NULL,
    key_ids          int[] NOT NULL,
    manifest_sha256  text NOT NULL CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
    verified_at      timestamptz,
    verified_by      text,
    verified_rows    bigint
);

-- backup_record(id, format, plan, keys, digest) records a backup just taken;
-- the time and the recording role are set here. Granted to the dba group.
CREATE FUNCTION pgphi.backup_record(p_backup_id text, p_format text, p_plan_id text, p_key_ids int[], p_manifest_sha256 text) RETURNS timestamptz
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_at timestamptz := pg_catalog.clock_timestamp();
BEGIN
    INSERT INTO pgphi.backups (backup_id, taken_at, recorded_by, format, plan_id, key_ids, manifest_sha256)
    VALUES (p_backup_id, v_at, pgphi.effective_role(), p_format, COALESCE(p_plan_id, ''), COALESCE(p_key_ids, ARRAY[]::int[]), p_manifest_sha256);
    RETURN v_at;
END
$$;
REVOKE ALL ON FUNCTION pgphi.backup_record(text, text, text, int[], text) FROM PUBLIC;

-- backup_verified(id, digest, rows) records that the backup whose signed
-- manifest has this digest was restored and matched it; the time and the
-- role are set here. It refuses a backup this database did not record or a
-- manifest that is not the recorded one. Granted to the dba group.
CREATE FUNCTION pgphi.backup_verified(p_backup_id text, p_manifest_sha256 text, p_rows bigint) RETURNS timestamptz
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_at timestamptz := pg_catalog.clock_timestamp();
BEGIN
    UPDATE pgphi.backups
       SET verified_at = v_at, verified_by = pgphi.effective_role(), verified_rows = p_rows
     WHERE backup_id OPERATOR(pg_catalog.=) p_backup_id AND manifest_sha256 OPERATOR(pg_catalog.=) p_manifest_sha256;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgphi: backup % with that manifest was not taken from this database', p_backup_id USING ERRCODE = '22023';
    END IF;
    RETURN v_at;
END
$$;
REVOKE ALL ON FUNCTION pgphi.backup_verified(text, text, bigint) FROM PUBLIC;

-- backup_status(max_age) says whether a verified backup newer than max_age
-- exists, for check and the report: (ok, newest verified backup's time,
-- its id). Plain function: it reads what its caller may read.
CREATE FUNCTION pgphi.backup_status(p_max_age interval, OUT ok boolean, OUT taken_at timestamptz, OUT backup_id text, OUT format text)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(b.taken_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_max_age), false), b.taken_at, b.backup_id, b.format
      FROM (SELECT NULL::int AS one) AS x
      LEFT JOIN LATERAL (SELECT * FROM pgphi.backups WHERE verified_at IS NOT NULL ORDER BY taken_at DESC LIMIT 1) AS b ON true
$$;
REVOKE ALL ON FUNCTION pgphi.backup_status(interval) FROM PUBLIC;

-- The refusal record knows the new commands by name.
CREATE OR REPLACE FUNCTION pgphi.audit_refusal(p_command text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    commands constant text[] := ARRAY['init', 'plan', 'status', 'check', 'flags', 'flags set', 'keys',
        'keys init', 'keys list', 'keys rotate', 'keys status', 'keys retire', 'keys rewrap',
        'pins', 'pins show', 'pins set', 'apply', 'cleanup', 'rollback', 'migrate', 'roles', 'roles init', 'approve', 'search',
        'verify', 'audit', 'audit verify', 'audit export', 'audit archive', 'audit checkpoint', 'report',
        'serve', 'backup', 'backup verify', 'reindex', 'leakage', 'decrypt', 'encrypt'];
    v_command text := CASE WHEN p_command = ANY (commands) THEN p_command ELSE 'unknown' END;
BEGIN
    PERFORM pgphi.audit_write('refused', v_command,
        pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), '', '', '', '', '', '', '',
        ARRAY[]::text[], ARRAY[]::text[], 0, 0, 'policy: access denied', '{}'::jsonb);
END
$fn$;
REVOKE ALL ON FUNCTION pgphi.audit_refusal(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgphi.audit_refusal(text) TO PUBLIC;
