-- Objects that depend on protected columns. A protected column
-- that was NOT NULL loses its NOT NULL at expand (an application writing
-- only ciphertext must write NULL plaintext) for
-- CHECK (col IS NOT NULL OR col_encrypted IS NOT NULL); cleanup makes the
-- ciphertext column NOT NULL, and rollback puts the NOT NULL back on the
-- plaintext. NULL: recorded by an earlier version, which left NOT NULL alone.
ALTER TABLE pgphi.protected_columns
    ADD COLUMN original_not_null boolean;
