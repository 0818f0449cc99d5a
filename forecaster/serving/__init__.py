"""Serving: the forecaster process that answers every closed candle (numpy only, no TensorFlow)."""
