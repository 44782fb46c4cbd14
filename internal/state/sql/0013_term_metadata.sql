-- Term metadata (docs/SEARCH.md section 6): each term family records the
-- term format version and its column's term options under documented names
-- (blindindex.StoredOptions), so that the terms can be recomputed from the
-- database alone and a later config cannot silently change them.
--   options: {"prefix_min": int, "prefix_max": int, "token_size": int,
--             "fold_accents": bool, "phone_region": text}, defaults filled in.
-- Numbered 0013: 0012 is reserved for a branch in flight.
ALTER TABLE pgphi.blind_indexes
    ADD COLUMN options jsonb CHECK (options IS NULL OR pg_catalog.jsonb_typeof(options) = 'object'),
    ADD COLUMN format_version int NOT NULL DEFAULT 1 CHECK (format_version = 1);

-- Upgrade in place: until now the options lived only in pgphi.plans.spec
-- (Go field names, defaults not filled in). Take them from the plan that
-- created the row: the latest plan recorded before the row whose spec has the
-- column with search options, else the earliest such plan. A row with no such
-- plan keeps NULL; the next apply records the options of its plan.
UPDATE pgphi.blind_indexes b
SET options = pg_catalog.jsonb_build_object(
        'prefix_min', s.pmin,
        'prefix_max', CASE WHEN s.pmax > 0 THEN s.pmax ELSE GREATEST(5, s.pmin) END,
        'token_size', CASE WHEN s.tok > 0 THEN s.tok ELSE 3 END,
        'fold_accents', s.fold,
        'phone_region', s.region)
FROM (
    SELECT bi.table_name, bi.column_name,
           CASE WHEN COALESCE((o.so->>'PrefixMin')::int, 0) > 0 THEN (o.so->>'PrefixMin')::int ELSE 3 END AS pmin,
           COALESCE((o.so->>'PrefixMax')::int, 0) AS pmax,
           COALESCE((o.so->>'TokenSize')::int, 0) AS tok,
           COALESCE((o.so->>'FoldAccents')::boolean, true) AS fold,
           pg_catalog.upper(pg_catalog.btrim(COALESCE(o.so->>'PhoneRegion', ''))) AS region
    FROM (SELECT table_name, column_name, min(created_at) AS created_at
          FROM pgphi.blind_indexes GROUP BY table_name, column_name) bi
    CROSS JOIN LATERAL (
        SELECT c->'search_options' AS so
        FROM pgphi.plans p,
             pg_catalog.jsonb_array_elements(p.spec->'tables') t,
             pg_catalog.jsonb_array_elements(t->'columns') c
        WHERE t->>'table' = bi.table_name AND c->>'name' = bi.column_name
          AND pg_catalog.jsonb_typeof(c->'search_options') = 'object'
        ORDER BY (p.created_at <= bi.created_at) DESC,
                 CASE WHEN p.created_at <= bi.created_at THEN p.created_at END DESC,
                 p.created_at, p.plan_id
        LIMIT 1
    ) o
) s
WHERE b.table_name = s.table_name AND b.column_name = s.column_name AND b.options IS NULL;
