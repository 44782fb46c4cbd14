-- Term generations (docs/SEARCH.md section 7): a reindex rebuilds a column's
-- terms online as a new generation beside the one in use, then switches.
--   generation: 1 for terms written by apply; each reindex takes the next
--   state:      'active'   the generation in <col>_bidx, which search and writers use
--               'building' the generation a reindex is writing into <col>_bidx_next;
--                          writers that know it write both, search reads both
-- At most one active and one building generation per column and family.
ALTER TABLE pgphi.blind_indexes
    ADD COLUMN generation int NOT NULL DEFAULT 1 CHECK (generation >= 1),
    ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'building'));
ALTER TABLE pgphi.blind_indexes DROP CONSTRAINT blind_indexes_pkey,
    ADD PRIMARY KEY (table_name, column_name, sub_kind, generation);
CREATE UNIQUE INDEX blind_indexes_one_per_state ON pgphi.blind_indexes (table_name, column_name, sub_kind, state);
