"""cryptocast forecaster package."""
