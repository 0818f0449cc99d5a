"""The model registry: immutable, versioned model artifacts kept in Redis.

A version holds the ``.keras`` file's bytes, their sha256, JSON metadata (features, window,
scaler parameters, training range, metrics) in the typed schema of :mod:`core.model_meta`, and
the numpy artifact (``.npz``: the weights as plain arrays, what serving loads without
TensorFlow) whose sha256 the metadata records. The metadata is validated when stored and parsed
on every read, and a record carries the parsed :class:`~core.model_meta.ModelMeta`. Every replica
on every host sees the same versions; a local disk cache is only a cache. Promotion is one atomic
SET of the ``current`` pointer to a version that is already complete. Reading verifies the sha256
of every part it returns (the stored field, the metadata's copy and the bytes must agree) before
returning any bytes; the registry never unpickles anything and does not load models itself:
that is the forecaster's job.

A global model (one per timeframe, serving every series of it) is registered under its subject,
``core.series.global_model_id(timeframe)``, like a series: its keys carry their own hash tag.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core.model_meta import ModelMeta, ModelMetaError
from core.series import SeriesId
from storage.candles import load_script
from storage.keys import Keys


class ModelIntegrityError(RuntimeError):
    """A stored artifact whose bytes, sha256 or metadata do not agree: never serve it."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One stored model version (``artifact`` is empty when only metadata was read)."""

    series: SeriesId
    version: str
    sha256: str
    meta: ModelMeta
    created_at: int
    artifact: bytes = b""
    npz: bytes = b""  # the numpy artifact, when it was asked for

    @property
    def trained_at(self) -> int:
        """When training finished (UTC ms): the metadata's, else when the version was stored."""
        return self.meta.trained_at if self.meta.trained_at is not None else self.created_at


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelRegistry:
    """Versioned model artifacts per series, with an atomically promoted ``current`` one."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._put = redis.register_script(load_script("put_model.lua"))
        self._promote = redis.register_script(load_script("promote_model.lua"))

    async def put(
        self,
        series: SeriesId,
        artifact: bytes,
        meta: ModelMeta | Mapping[str, Any],
        *,
        npz: bytes = b"",
    ) -> ModelRecord:
        """Store a new immutable version (``npz``: its numpy artifact); returns its record (not
        yet current).

        A dict is stored as given (plus ``sha256``, ``version`` and ``npz_sha256``) once its JSON
        validates as a :class:`ModelMeta`; else :class:`~core.model_meta.ModelMetaError` (a
        ``ValueError``) and nothing is stored.
        """
        if not artifact:
            raise ValueError("empty model artifact")
        raw = meta.to_json() if isinstance(meta, ModelMeta) else dict(meta)
        sha = sha256_hex(artifact)
        seq = int(await self.redis.incr(self.keys.model_counter(series)))
        version = f"v{seq}-{sha[:8]}"
        extra = {"npz_sha256": sha256_hex(npz)} if npz else {}
        body = orjson.dumps({**raw, "sha256": sha, "version": version, **extra})
        # The bytes as stored must parse (orjson writes NaN as null, which a float field refuses).
        typed = ModelMeta.parse(body)
        created = int(time.time() * 1000)
        await self._put(
            keys=[self.keys.model_version(series, version), self.keys.model_versions(series)],
            args=[artifact, sha, body, created, seq, version, npz],
        )
        return ModelRecord(series, version, sha, typed, created, artifact, npz)

    async def promote(self, series: SeriesId, record: ModelRecord) -> None:
        """Make ``record`` the version served from now on (atomic)."""
        await self._promote(
            keys=[self.keys.model_version(series, record.version), self.keys.model_current(series)],
            args=[record.version, record.sha256],
        )

    async def current_version(self, series: SeriesId) -> str | None:
        raw = await self.redis.get(self.keys.model_current(series))
        return None if raw is None else raw.decode()

    async def current(
        self, series: SeriesId, *, with_artifact: bool = True, with_npz: bool = False
    ) -> ModelRecord | None:
        """The promoted version, verified; ``None`` when nothing was promoted yet."""
        version = await self.current_version(series)
        if version is None:
            return None
        return await self.get(series, version, with_artifact=with_artifact, with_npz=with_npz)

    async def get(
        self, series: SeriesId, version: str, *, with_artifact: bool = True, with_npz: bool = False
    ) -> ModelRecord:
        """One version (the ``.keras`` bytes with ``with_artifact``, the numpy artifact with
        ``with_npz``); raises :class:`ModelIntegrityError` unless the bytes returned, their
        sha256 and the metadata agree and the metadata parses, and ``KeyError`` when the version
        does not exist."""
        fields = ["sha256", "meta", "created_at", "artifact" if with_artifact else "created_at"]
        fields.append("npz" if with_npz else "created_at")
        values = await self.redis.hmget(self.keys.model_version(series, version), fields)
        if values[0] is None:
            raise KeyError(f"no model version {version} for {series}")
        sha, raw_meta, created = values[0].decode(), values[1], values[2]
        try:
            meta = ModelMeta.parse(raw_meta) if raw_meta else None
        except ModelMetaError as e:
            raise ModelIntegrityError(f"model {series} {version}: {e}") from None
        if meta is None or meta.sha256 != sha or meta.version != version:
            raise ModelIntegrityError(f"model {series} {version}: metadata missing or mismatched")
        artifact = npz = b""
        if with_artifact:
            artifact = values[3] or b""
            if sha256_hex(artifact) != sha:
                raise ModelIntegrityError(f"model {series} {version}: artifact sha256 mismatch")
        if with_npz:
            npz = values[4] or b""
            if not npz or meta.npz_sha256 is None:
                raise ModelIntegrityError(f"model {series} {version}: no numpy artifact stored")
            if sha256_hex(npz) != meta.npz_sha256:
                raise ModelIntegrityError(f"model {series} {version}: npz sha256 mismatch")
        return ModelRecord(series, version, sha, meta, int(created or 0), artifact, npz)

    async def versions(self, series: SeriesId) -> list[str]:
        """Stored version ids, oldest first."""
        return [
            v.decode() for v in await self.redis.zrange(self.keys.model_versions(series), 0, -1)
        ]

    async def prune(self, series: SeriesId, keep: int = 5) -> list[str]:
        """Delete all but the newest ``keep`` versions, never the current one; returns deleted."""
        current = await self.current_version(series)
        old = (await self.versions(series))[:-keep] if keep > 0 else await self.versions(series)
        doomed = [v for v in old if v != current]
        if doomed:
            pipe = self.redis.pipeline(transaction=False)
            for v in doomed:
                pipe.delete(self.keys.model_version(series, v))
            pipe.zrem(self.keys.model_versions(series), *doomed)
            await pipe.execute()
        return doomed


class TrainingLog:
    """The last training attempt per series, which the scheduler counts candles from."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def record(self, series: SeriesId, **fields: Any) -> None:
        await self.redis.hset(
            self.keys.training_state(series),
            mapping={k: orjson.dumps(v) for k, v in fields.items()},
        )

    async def state(self, series: SeriesId) -> dict[str, Any]:
        raw = await self.redis.hgetall(self.keys.training_state(series))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}
