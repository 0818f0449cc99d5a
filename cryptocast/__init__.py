"""cryptocast cryptocast package."""
