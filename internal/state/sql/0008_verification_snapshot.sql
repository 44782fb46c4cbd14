-- Where a verification began, as the xmin of a snapshot taken before it read
-- anything: a row version written by a transaction at or after it may not
-- have been seen, so cleanup re-verifies exactly those rows under its lock
-- instead of refusing whenever the application wrote anything.
ALTER TABLE pgphi.verifications ADD COLUMN snapshot_xmin numeric;
