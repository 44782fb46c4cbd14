-- Clients of `pgphi serve`: each maps a bearer token (only its SHA-256 is
-- stored) or a TLS client certificate subject (CN) to the database role the
-- server acts as for that client's requests (SET LOCAL ROLE). A revoked
-- client keeps its row (who created and revoked it, and when) and its name
-- may be given to a new client. Written only through serve_client_create and
-- serve_client_revoke, which only the dba group may execute and which set
-- the actor and the time themselves; readable by the pgphi groups (the
-- hashes of 32-byte random tokens give nothing to forge a token with).
CREATE TABLE pgphi.serve_clients (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    db_role      text NOT NULL CHECK (pg_catalog.length(db_role) BETWEEN 1 AND 63),
    token_sha256 bytea CHECK (pg_catalog.length(token_sha256) = 32),
    cert_cn      text CHECK (pg_catalog.length(cert_cn) BETWEEN 1 AND 255),
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    revoked_at   timestamptz,
    revoked_by   text,
    CHECK ((token_sha256 IS NULL) <> (cert_cn IS NULL)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE UNIQUE INDEX serve_clients_active_name ON pgphi.serve_clients (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX serve_clients_token ON pgphi.serve_clients (token_sha256) WHERE token_sha256 IS NOT NULL;
CREATE UNIQUE INDEX serve_clients_active_cn ON pgphi.serve_clients (cert_cn) WHERE revoked_at IS NULL AND cert_cn IS NOT NULL;

-- serve_client_create registers a client: a token hash or a certificate CN,
-- and an existing role. It records the effective role and the time itself.
CREATE FUNCTION pgphi.serve_client_create(p_name text, p_db_role text, p_token_sha256 bytea, p_cert_cn text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.to_regrole(pg_catalog.quote_ident(p_db_role)) IS NULL THEN
        RAISE EXCEPTION 'pgphi serve: role % does not exist', p_db_role USING ERRCODE = '42704';
    END IF;
    IF EXISTS (SELECT 1 FROM pgphi.serve_clients WHERE name OPERATOR(pg_catalog.=) p_name AND revoked_at IS NULL) THEN
        RAISE EXCEPTION 'pgphi serve: a client named % exists; revoke it first', p_name USING ERRCODE = '23505';
    END IF;
    INSERT INTO pgphi.serve_clients (name, db_role, token_sha256, cert_cn, created_at, created_by)
    VALUES (p_name, p_db_role, p_token_sha256, p_cert_cn, pg_catalog.clock_timestamp(),
            CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                 THEN pg_catalog.session_user()::text ELSE pg_catalog.current_setting('role') END);
END
$$;
REVOKE ALL ON FUNCTION pgphi.serve_client_create(text, text, bytea, text) FROM PUBLIC;

-- serve_client_revoke revokes the active client of that name; false when
-- there is none.
CREATE FUNCTION pgphi.serve_client_revoke(p_name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pgphi.serve_clients SET revoked_at = pg_catalog.clock_timestamp(),
        revoked_by = CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none'
                          THEN pg_catalog.session_user()::text ELSE pg_catalog.current_setting('role') END
     WHERE name OPERATOR(pg_catalog.=) p_name AND revoked_at IS NULL;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION pgphi.serve_client_revoke(text) FROM PUBLIC;
