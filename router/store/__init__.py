"""The store: the SQL that writes each table, one module per table family."""
