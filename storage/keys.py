"""Every Redis key and channel name cryptocast uses. No other module spells a key.

All keys of one series carry the series id in braces, the Redis Cluster hash tag, so every
command and Lua script about one series touches one slot (docs/architecture.md, decision 6).
The prefix is configurable (``CRYPTOCAST_KEY_PREFIX``) so several deployments can share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.series import SeriesId

# Candles per hash bucket: at most Redis's default hash-max-listpack-entries (128) so each bucket
# stays listpack-encoded.
BUCKET_SIZE = 128


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (one prefix)."""

    prefix: str = "cryptocast"

    def tag(self, series: SeriesId) -> str:
        return "{" + series.key + "}"

    # candle history -------------------------------------------------------------------------
    def candle_bucket(self, series: SeriesId, bucket: int) -> str:
        return f"{self.prefix}:candles:{self.tag(series)}:b:{bucket}"

    def candle_bucket_prefix(self, series: SeriesId) -> str:
        return f"{self.prefix}:candles:{self.tag(series)}:b:"

    def candle_index(self, series: SeriesId) -> str:
        """Sorted set of bucket numbers that exist (score = bucket number)."""
        return f"{self.prefix}:candles:{self.tag(series)}:buckets"

    def candle_meta(self, series: SeriesId) -> str:
        """Hash: count, first and last index."""
        return f"{self.prefix}:candles:{self.tag(series)}:meta"

    def holes(self, series: SeriesId) -> str:
        """Sorted set of candle indexes known to be missing at the exchange (unfillable)."""
        return f"{self.prefix}:holes:{self.tag(series)}"

    # events and predictions -----------------------------------------------------------------
    def events(self, series: SeriesId) -> str:
        return f"{self.prefix}:events:{self.tag(series)}"

    def predictions(self, series: SeriesId) -> str:
        """Both the pub/sub channel and the capped stream (different namespaces in Redis)."""
        return f"{self.prefix}:predictions:{self.tag(series)}"

    def latest_prediction(self, series: SeriesId) -> str:
        return f"{self.prefix}:predictions:{self.tag(series)}:latest"

    def live_score(self, series: SeriesId) -> str:
        return f"{self.prefix}:score:{self.tag(series)}"

    def calibration(self, series: SeriesId) -> str:
        """JSON: the series' live interval calibration (ACI state and the pending interval)."""
        return f"{self.prefix}:calibration:{self.tag(series)}"

    def forecast_path(self, series: SeriesId) -> str:
        """JSON: the series' multi-step forecast path from its newest candle (storage.paths)."""
        return f"{self.prefix}:path:{self.tag(series)}"

    # model registry -------------------------------------------------------------------------
    def model_version(self, series: SeriesId, version: str) -> str:
        return f"{self.prefix}:models:{self.tag(series)}:v:{version}"

    def model_versions(self, series: SeriesId) -> str:
        return f"{self.prefix}:models:{self.tag(series)}:versions"

    def model_current(self, series: SeriesId) -> str:
        return f"{self.prefix}:models:{self.tag(series)}:current"

    def training_state(self, series: SeriesId) -> str:
        """Hash: the last training attempt (started/finished, candle index, outcome, error)."""
        return f"{self.prefix}:models:{self.tag(series)}:training"

    def model_counter(self, series: SeriesId) -> str:
        return f"{self.prefix}:models:{self.tag(series)}:seq"

    def clock(self) -> str:
        """The exchange clock reading shared by ingest (no series: not in any hash tag)."""
        return f"{self.prefix}:clock"

    # coordination ---------------------------------------------------------------------------
    def lease(self, series: SeriesId, role: str) -> str:
        return f"{self.prefix}:lease:{self.tag(series)}:{role}"

    def replicas(self, role: str) -> str:
        """Sorted set of live replicas of a role (score = last heartbeat ms); a single key."""
        return f"{self.prefix}:replicas:{role}"

    def heartbeat(self, series: SeriesId, role: str) -> str:
        return f"{self.prefix}:heartbeat:{self.tag(series)}:{role}"
