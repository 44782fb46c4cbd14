"""A small patient service in the manner of Felicity LIMS, living through
pgphi's migration: plaintext, encrypted search, encrypted writes, cleanup
and rollback, deciding at every call from pgphi's flags and the table's
columns, never from a switch of its own."""
