"""cryptocast storage package."""
