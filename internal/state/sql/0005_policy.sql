-- Signed approvals of plan ids (package policy). One row per plan id and
-- approver key: the Ed25519 signature over
--   "pgphi-approval-v1\n" || plan_id || "\n" || environment || "\n"
-- is re-verified against the allowed signers file every time approvals are
-- checked, so a row edited or inserted by hand counts for nothing.
-- No sequence: roles that may only INSERT need no sequence privilege.
CREATE TABLE pgphi.approvals (
    plan_id      text NOT NULL,
    environment  text NOT NULL,
    signer       text NOT NULL,   -- name from the signers file when recorded
    role         text NOT NULL CHECK (role IN ('dba', 'healthcare_admin', 'audit_officer')),
    fingerprint  text NOT NULL,   -- SHA256:... of the approver's ssh-ed25519 key
    signed_at    timestamptz NOT NULL DEFAULT now(),
    signature    bytea NOT NULL CHECK (length(signature) = 64),
    recorded_by  text NOT NULL DEFAULT current_user,  -- database role that stored it
    PRIMARY KEY (plan_id, fingerprint)
);
