"""cryptocast web package."""
