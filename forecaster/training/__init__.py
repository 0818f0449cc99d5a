"""Training: the processes that fit models (the only code that imports TensorFlow)."""
