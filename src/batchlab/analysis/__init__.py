"""Analysis: small pure functions on plain arrays read from the store (or written by other tools)."""
