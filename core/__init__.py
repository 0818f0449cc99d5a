"""The bottom layer: pure value types (series, candles, predictions, the clock) and the
lifecycle toolkit (cancellation, signals, backoff). Every other package may import it; it imports
nothing of ours."""
