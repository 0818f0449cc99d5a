"""Prometheus metrics of the ingest service (module-level: one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CANDLES_STORED = Counter(
    "cryptocast_candles_ingested_total", "Closed candles stored (new or revised)", ["series", "via"]
)
CANDLES_REJECTED = Counter(
    "cryptocast_candles_rejected_total", "Messages or candles rejected", ["series", "reason"]
)
RECONNECTS = Counter(
    "cryptocast_ws_reconnects_total", "Websocket reconnects", ["exchange", "reason"]
)
GAPFILL_CANDLES = Counter(
    "cryptocast_gapfill_candles_total", "Candles recovered over REST by gap fill", ["series"]
)
REST_CALLS = Counter("cryptocast_rest_calls_total", "REST kline requests", ["exchange"])
INGEST_LAG = Gauge(
    "cryptocast_ingest_lag_seconds",
    "Service clock minus the close of the newest stored candle",
    ["series"],
)
UNFILLABLE = Gauge(
    "cryptocast_unfillable_candles", "Candles the exchange does not have (holes)", ["series"]
)
SERIES_STALE = Gauge(
    "cryptocast_series_stale",
    "1 when the newest candle closed more than stale_after timeframes ago by the service clock",
    ["series"],
)
