-- The tamper-evident audit trail (package audit, spec: audit/FORMAT.md).
-- One row per record; `record` is the full record including its hash, `hash`
-- and `prev` repeat its chain fields so the chain can be followed in SQL.
-- Records name commands, actors, tables and columns, never values.
CREATE TABLE pgphi.audit_log (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    recorded_at timestamptz NOT NULL,
    record      jsonb NOT NULL,
    hash        text NOT NULL,
    prev        text NOT NULL
);
CREATE INDEX audit_log_recorded_at ON pgphi.audit_log (recorded_at);

-- Signed heads (Ed25519). An auditor keeps a copy outside the database; the
-- copy here lets `Verify` cross-check the chain against every signed head.
-- No sequence: roles that may only INSERT need no sequence privilege.
CREATE TABLE pgphi.audit_checkpoints (
    seq             bigint NOT NULL,
    hash            text NOT NULL,
    signed_at       timestamptz NOT NULL,
    key_fingerprint text NOT NULL,   -- SHA256:... of the signer's ssh-ed25519 key
    signature       text NOT NULL,   -- base64 Ed25519 signature (audit/FORMAT.md)
    PRIMARY KEY (seq, key_fingerprint, signed_at)
);

-- Append-only: any UPDATE, DELETE or TRUNCATE fails, for every role. A
-- superuser can still disable triggers (ALTER TABLE ... DISABLE TRIGGER);
-- the hash chain, the file mirror and signed checkpoints exist for that case.
CREATE FUNCTION pgphi.audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgphi audit tables are append-only: % on %.% is not allowed', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON pgphi.audit_log
    FOR EACH ROW EXECUTE FUNCTION pgphi.audit_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON pgphi.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION pgphi.audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON pgphi.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION pgphi.audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON pgphi.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION pgphi.audit_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON pgphi.audit_log FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON pgphi.audit_checkpoints FROM PUBLIC;
