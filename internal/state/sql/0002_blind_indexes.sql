-- One row per blind index term family (sub-kind) of a protected column: its
-- truncation and the data key its HMAC key is derived from. Fixed when the
-- column is first indexed, so terms written later stay comparable.
CREATE TABLE pgphi.blind_indexes (
    table_name   text NOT NULL,
    column_name  text NOT NULL,
    sub_kind     text NOT NULL,
    bits         int  NOT NULL CHECK (bits BETWEEN 1 AND 56),
    key_id       int  NOT NULL REFERENCES pgphi.data_keys,
    rows_planned bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name, sub_kind)
);
