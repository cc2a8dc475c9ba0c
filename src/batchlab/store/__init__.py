"""The study store: one SQLite file plus parameter snapshots, and the tables read from it."""
