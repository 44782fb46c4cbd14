-- Counts writes to a protected table once per statement (an AFTER ... FOR EACH
-- STATEMENT trigger) instead of once per row from the row trigger: pgphi's own
-- backfill then pays nothing per row for it, and "no write since the last
-- verification" only needs to know that some write happened.
CREATE FUNCTION pgphi.count_write() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM nextval('pgphi.write_seq');
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgphi.count_write() FROM PUBLIC;
