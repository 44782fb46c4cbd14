-- Sizing by distinct values (docs/SEARCH.md section 4): how each term
-- family's bits were chosen, from what counts, fixed at first apply like the
-- bits themselves. Rows recorded before this migration were sized by rows.
--   sizing:          'rows' (older planner), 'distinct' (from the data), 'config' (search_options.bits)
--   distinct_values: distinct messages of the family in the data when sized
--   column_values:   distinct values of the column when sized
--   values_per_array: the simulated mean number of distinct values sharing one whole term array
ALTER TABLE pgphi.blind_indexes
    ADD COLUMN sizing text NOT NULL DEFAULT 'rows' CHECK (sizing IN ('rows', 'distinct', 'config')),
    ADD COLUMN distinct_values bigint CHECK (distinct_values IS NULL OR distinct_values >= 0),
    ADD COLUMN column_values bigint CHECK (column_values IS NULL OR column_values >= 0),
    ADD COLUMN values_per_array double precision;

-- The joint budget may leave a family 0 bits: its terms are its tag alone
-- (every value with a message of the family shares one term).
ALTER TABLE pgphi.blind_indexes DROP CONSTRAINT blind_indexes_bits_check,
    ADD CONSTRAINT blind_indexes_bits_check CHECK (bits BETWEEN 0 AND 56);
