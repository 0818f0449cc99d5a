"""cryptocast ingest package."""
