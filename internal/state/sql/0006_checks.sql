-- Pre-flight checklists, as evidence for the compliance report.
CREATE TABLE pgphi.checks (
    id         bigserial PRIMARY KEY,
    plan_id    text NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    ok         boolean NOT NULL,
    items      jsonb NOT NULL   -- {items: [{id, title, required, passed, evidence}], validation_rules, validation_violations}; never values
);
