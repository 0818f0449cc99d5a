"""Prometheus metrics of the forecaster service (module-level: one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter("cryptocast_predictions_published_total", "Predictions published", ["series"])
EVENTS_SKIPPED = Counter(
    "cryptocast_events_skipped_total", "Closed-candle events not predicted", ["series", "reason"]
)
EVENTS_PENDING = Gauge(
    "cryptocast_events_pending", "Closed-candle events delivered but not acknowledged", ["series"]
)
LATENCY = Histogram(
    "cryptocast_prediction_latency_seconds",
    "Candle arrival at ingest → prediction published",
    ["series"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_LATENCY = Histogram(
    "cryptocast_publish_seconds", "Time of the publish script", buckets=(0.0005, 0.001, 0.005, 0.02)
)
MODEL_AGE = Gauge(
    "cryptocast_model_age_candles", "Candles since the model's training range", ["series"]
)
TRAINING_SECONDS = Gauge("cryptocast_training_seconds", "Duration of the last training", ["series"])
TRAININGS = Counter("cryptocast_trainings_total", "Training runs by outcome", ["series", "outcome"])
LIVE_MAE = Gauge("cryptocast_live_mae", "Rolling live MAE of published predictions", ["series"])
LIVE_MASE = Gauge(
    "cryptocast_live_mase",
    "Rolling live MAE / naive MAE on the same targets (< 1 beats naive; not a backtest MASE)",
    ["series"],
)
SERIES_HELD = Gauge("cryptocast_series_served", "Series this replica serves (leases held)")
