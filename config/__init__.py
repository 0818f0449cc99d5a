"""cryptocast config package."""
