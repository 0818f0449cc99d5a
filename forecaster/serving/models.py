"""The models a forecaster process serves: loaded once per version, swapped when promoted.

:class:`ModelCache` is shared by every worker of the process: with the global scope one model
serves every series of a timeframe, so its numpy artifact is read, verified and loaded once and
its promoted version polled once, not once per series. :class:`ModelHolder` is one series' view:
the version it serves now, swapped for a newly promoted one while the old keeps serving
(docs/architecture.md, decisions 3 and 11).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import RedisError

from core.lifecycle import cancel_and_wait
from core.series import SeriesId
from forecaster.inference import LoadedModel
from storage.registry import ModelIntegrityError, ModelRecord, ModelRegistry

__all__ = ["MODEL_REFRESH_S", "VERSION_TTL_S", "ModelCache", "ModelHolder"]

MODEL_REFRESH_S = 1.0
VERSION_TTL_S = 0.5  # a promoted version's id is read at most this often per model


class ModelCache:
    """Loaded models shared by every worker of the process, one per (subject, version).

    With the global scope one model serves every series of a timeframe: it is read and loaded
    once, not once per series. Serving loads the numpy artifact (no TensorFlow in the process);
    only the ``keras`` inference baseline loads the ``.keras`` file.
    """

    def __init__(self, registry: ModelRegistry, *, keras: bool = False) -> None:
        self.registry = registry
        self.keras = keras
        self._loads: dict[tuple[str, str], asyncio.Task[tuple[LoadedModel, ModelRecord]]] = {}
        self._versions: dict[str, tuple[float, asyncio.Future[str | None]]] = {}

    async def current_version(self, subject: SeriesId, *, fresh: bool = False) -> str | None:
        """The promoted version of ``subject``, read at most once per ``VERSION_TTL_S`` for all
        the workers that ask (a global model's thousand series poll it as one); ``fresh``
        reads it now."""
        now = time.monotonic()
        hit = self._versions.get(subject.key)
        failed = (
            hit is not None
            and hit[1].done()
            and (hit[1].cancelled() or hit[1].exception() is not None)
        )
        if fresh or failed or hit is None or now - hit[0] >= VERSION_TTL_S:
            hit = (now, asyncio.ensure_future(self.registry.current_version(subject)))
            self._versions[subject.key] = hit
        return await asyncio.shield(hit[1])

    async def get(self, subject: SeriesId, version: str) -> tuple[LoadedModel, ModelRecord]:
        """The loaded model of ``version``; raises what loading raised (refused versions stay
        refused: a version is immutable)."""
        key = (subject.key, version)
        task = self._loads.get(key)
        if task is None:
            task = self._loads[key] = asyncio.create_task(self._load(subject, version))
            task.add_done_callback(lambda t: self._settled(key, t))
        # Shielded: a worker cancelled while waiting must not cancel the others' load.
        return await asyncio.shield(task)

    def _settled(self, key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        if task.cancelled() or isinstance(task.exception(), RedisError | OSError):
            self._loads.pop(key, None)  # transient: the next refresh tries again
        elif task.exception() is None:
            for old in [k for k in self._loads if k[0] == key[0] and k != key]:
                self._loads.pop(old)  # holders keep what they serve until they swap

    async def _load(self, subject: SeriesId, version: str) -> tuple[LoadedModel, ModelRecord]:
        if self.keras:
            rec = await self.registry.get(subject, version)
            # Keras deserialisation is CPU work: keep the event loop serving meanwhile.
            model = await asyncio.to_thread(LoadedModel.from_artifact, rec.artifact, rec.meta)
        else:
            rec = await self.registry.get(subject, version, with_artifact=False, with_npz=True)
            model = await asyncio.to_thread(LoadedModel.from_npz, rec.npz, rec.meta)
        return model, rec

    async def close(self) -> None:
        for task in list(self._loads.values()):
            await cancel_and_wait(task)
        self._loads.clear()
        for _, fut in self._versions.values():
            fut.cancel()
        self._versions.clear()


class ModelHolder:
    """The model serving one series, swapped for each newly promoted version of its subject
    (the series itself, or its timeframe's global model)."""

    def __init__(
        self,
        cache: ModelCache,
        subject: SeriesId,
        log: Any,
        *,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.cache = cache
        self.registry = registry or cache.registry
        self.series = subject
        self.log = log
        self.model: LoadedModel | None = None
        self.record: ModelRecord | None = None
        self._loading: asyncio.Task[None] | None = None
        self._refused: set[str] = set()

    async def refresh(self, *, fresh: bool = False) -> None:
        """Start loading the promoted version if it changed (returns at once); ``fresh`` reads
        the promoted version now rather than the process's last reading of it."""
        version = await self.cache.current_version(self.series, fresh=fresh)
        if (
            version is None
            or (self.record is not None and version == self.record.version)
            or version in self._refused
            or (self._loading is not None and not self._loading.done())
        ):
            return
        self._loading = asyncio.create_task(self._load(version))

    async def load_now(self) -> None:
        """Load the promoted version before serving (start-up)."""
        await self.refresh(fresh=True)
        if self._loading is not None:
            await self._loading

    async def _load(self, version: str) -> None:
        try:
            model, rec = await self.cache.get(self.series, version)
        except (ModelIntegrityError, KeyError, ValueError, OSError) as e:
            self._refused.add(version)
            self.log.error(
                "model.refused",
                version=version,
                error=str(e)[:300],
                serving=self.record.version if self.record else None,
            )
            return
        self.model, self.record = model, rec
        self.log.info("model.loaded", version=version, skill=rec.meta.skill)

    async def close(self) -> None:
        if self._loading is not None:
            await cancel_and_wait(self._loading)
