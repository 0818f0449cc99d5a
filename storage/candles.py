"""Candle history in Redis: idempotent upserts keyed by open time, ranges, holes, retention.

Layout (all keys of a series share its hash tag): candles live in hashes of
:data:`~storage.keys.BUCKET_SIZE` consecutive candles each (field = position in the bucket,
value = the 48-byte packed candle). Small hashes stay in Redis's listpack encoding, which costs
about 55 bytes per candle; a sorted set indexes which buckets exist, and a meta hash keeps the
count and the newest index. One Lua script upserts a batch atomically and, for live data, appends
the closed-candle event in the same step, so a stored candle always has its event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.schemas import Candle
from core.series import SeriesId
from storage.codec import unpack_candle
from storage.columns import CandleColumns, floor_indexes, upsert_chunks
from storage.holes import Hole, find_holes
from storage.keys import BUCKET_SIZE, Keys
from storage.scripts import PipelinedScript, load_script

__all__ = ["SCRIPT_CHUNK", "CandleStore", "Hole", "UpsertResult", "find_holes", "load_script"]

# Candles per script call: big enough to amortise the round trip, small enough that one call
# never blocks Redis for more than a few milliseconds.
SCRIPT_CHUNK = 1_000


@dataclass(slots=True)
class UpsertResult:
    """What a batch upsert did."""

    new: int = 0
    replaced: int = 0
    unchanged: int = 0
    count: int = 0
    last_open_time: int | None = None
    trimmed: int = 0

    def add(self, other: UpsertResult) -> None:
        self.new += other.new
        self.replaced += other.replaced
        self.unchanged += other.unchanged
        self.count = other.count
        self.last_open_time = other.last_open_time
        self.trimmed += other.trimmed


@dataclass
class CandleStore:
    """Candle history of every series, in one Redis (or Cluster)."""

    redis: Any
    keys: Keys
    retention: int = 100_000
    event_stream_len: int = 100_000

    def __post_init__(self) -> None:
        # Repeated after a lost script, an upsert is harmless: a candle written the first time
        # is unchanged the second and yields no new event.
        self._upsert = PipelinedScript(self.redis, load_script("upsert_candles.lua"))
        self._trim = self.redis.register_script(load_script("trim_candles.lua"))

    # writing --------------------------------------------------------------------------------
    async def upsert(
        self,
        series: SeriesId,
        candles: Iterable[Candle] | CandleColumns,
        *,
        emit_events: bool = False,
        arrived_ms: int = 0,
    ) -> UpsertResult:
        """Store validated closed candles; same candle twice changes nothing, a revised one
        replaces the old. With ``emit_events`` every new or revised candle also gets a
        closed-candle event (live ingest and gap fill; not backfill). Batches are pipelined.
        """
        batch = candles if isinstance(candles, CandleColumns) else list(candles)
        if not len(batch):
            total = UpsertResult()
            total.count = await self.count(series)
            total.last_open_time = await self.last_open_time(series)
            return total
        results = await self.upsert_many(
            [(series, batch)], emit_events=emit_events, arrived_ms=arrived_ms
        )
        return results[0]

    async def upsert_many(
        self,
        batches: Sequence[tuple[SeriesId, Sequence[Candle] | CandleColumns]],
        *,
        emit_events: bool = False,
        arrived_ms: int | Sequence[int] = 0,
    ) -> list[UpsertResult]:
        """:meth:`upsert` for several series in one pipelined round trip (live ingest of many
        symbols); one result per batch, in order; ``arrived_ms`` one for all or one per batch.
        A batch may be :class:`~storage.columns.CandleColumns` (a backfill): packed as arrays.
        Each script call still touches one series' keys only, so this works on Redis Cluster."""
        emit = 1 if emit_events else 0
        arrivals = [arrived_ms] * len(batches) if isinstance(arrived_ms, int) else arrived_ms
        calls: list[tuple[list[str], list[Any]]] = []
        chunks: list[int] = []
        for (series, batch), arrived in zip(batches, arrivals, strict=True):
            keys = [
                self.keys.candle_meta(series),
                self.keys.candle_index(series),
                self.keys.events(series),
            ]
            n = 0
            for blob, buckets in upsert_chunks(series.timeframe, batch, SCRIPT_CHUNK):
                argv = [emit, self.event_stream_len, arrived, BUCKET_SIZE, blob, *buckets]
                calls.append(
                    ([*keys, *(self.keys.candle_bucket(series, b) for b in buckets)], argv)
                )
                n += 1
            chunks.append(n)
        replies = iter(await self._upsert.run(calls))
        results = []
        for (series, _batch), n in zip(batches, chunks, strict=True):
            total = UpsertResult()
            for _ in range(n):
                new, replaced, unchanged, count, last = next(replies)
                total.add(
                    UpsertResult(
                        int(new),
                        int(replaced),
                        int(unchanged),
                        int(count),
                        series.timeframe.open_time(int(last)) if int(last) >= 0 else None,
                    )
                )
            if total.count > self.retention:
                before = total.count
                total.count = await self._enforce_retention(series)
                total.trimmed = before - total.count
            results.append(total)
        return results

    async def _enforce_retention(self, series: SeriesId) -> int:
        excess = await self.count(series) - self.retention
        n_buckets = excess // BUCKET_SIZE + 2
        raw = await self.redis.zrange(self.keys.candle_index(series), 0, n_buckets - 1)
        buckets = [int(b) for b in raw]
        keys = [self.keys.candle_meta(series), self.keys.candle_index(series)]
        keys += [self.keys.candle_bucket(series, b) for b in buckets]
        return int(await self._trim(keys=keys, args=[self.retention, *buckets]))

    async def record_unfillable(self, series: SeriesId, open_times: Iterable[int]) -> int:
        """Remember candles the exchange does not have, so gap fill stops asking; returns how
        many were newly recorded."""
        tf = series.timeframe
        mapping = {str(t): tf.index(t) for t in open_times}
        if not mapping:
            return 0
        return int(await self.redis.zadd(self.keys.holes(series), mapping))

    async def unfillable(self, series: SeriesId) -> list[int]:
        """Open times recorded as missing at the exchange."""
        return sorted(int(t) for t in await self.redis.zrange(self.keys.holes(series), 0, -1))

    # reading --------------------------------------------------------------------------------
    async def count(self, series: SeriesId) -> int:
        return int(await self.redis.hget(self.keys.candle_meta(series), "count") or 0)

    async def last_open_time(self, series: SeriesId) -> int | None:
        raw = await self.redis.hget(self.keys.candle_meta(series), "last")
        return None if raw is None else series.timeframe.open_time(int(raw))

    async def first_open_time(self, series: SeriesId) -> int | None:
        raw = await self.redis.zrange(self.keys.candle_index(series), 0, 0)
        if not raw:
            return None
        b = int(raw[0])
        fields = await self.redis.hkeys(self.keys.candle_bucket(series, b))
        if not fields:
            return None
        return series.timeframe.open_time(b * BUCKET_SIZE + min(int(f) for f in fields))

    async def get(self, series: SeriesId, open_time: int) -> Candle | None:
        b, f = divmod(series.timeframe.index(open_time), BUCKET_SIZE)
        raw = await self.redis.hget(self.keys.candle_bucket(series, b), str(f))
        return None if raw is None else unpack_candle(open_time, raw)

    async def window(self, series: SeriesId, end_open_time: int, n: int) -> list[Candle]:
        """The ``n`` candles ending at ``end_open_time`` (inclusive) that exist, oldest first.

        Fetches exactly those fields (HMGET per bucket, pipelined): the forecaster's hot path.
        """
        tf = series.timeframe
        end = tf.index(end_open_time)
        wanted = range(end - n + 1, end + 1)
        by_bucket: dict[int, list[int]] = defaultdict(list)
        for i in wanted:
            by_bucket[i // BUCKET_SIZE].append(i)
        pipe = self.redis.pipeline(transaction=False)
        for b, idxs in by_bucket.items():
            pipe.hmget(self.keys.candle_bucket(series, b), [str(i % BUCKET_SIZE) for i in idxs])
        out: list[Candle] = []
        for idxs, values in zip(by_bucket.values(), await pipe.execute(), strict=True):
            out += [
                unpack_candle(tf.open_time(i), v)
                for i, v in zip(idxs, values, strict=True)
                if v is not None
            ]
        return out

    async def last(self, series: SeriesId, n: int) -> list[Candle]:
        """The ``n`` most recent stored candles, oldest first."""
        out: list[Candle] = []
        start = 0
        while len(out) < n:
            per_call = max(1, (n - len(out)) // BUCKET_SIZE + 1)
            raw = await self.redis.zrevrange(
                self.keys.candle_index(series), start, start + per_call - 1
            )
            if not raw:
                break
            start += len(raw)
            out = await self._read_buckets(series, [int(b) for b in raw]) + out
        return out[-n:] if n else []

    async def range(
        self, series: SeriesId, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Candle]:
        """Stored candles with ``start_ms <= open_time <= end_ms``, oldest first."""
        tf = series.timeframe
        lo = "-inf" if start_ms is None else tf.floor_index(start_ms) // BUCKET_SIZE
        hi = "+inf" if end_ms is None else tf.floor_index(end_ms) // BUCKET_SIZE
        raw = await self.redis.zrangebyscore(self.keys.candle_index(series), lo, hi)
        candles = await self._read_buckets(series, [int(b) for b in raw])
        return [
            c
            for c in candles
            if (start_ms is None or c.open_time >= start_ms)
            and (end_ms is None or c.open_time <= end_ms)
        ]

    async def _read_buckets(self, series: SeriesId, buckets: Sequence[int]) -> list[Candle]:
        tf = series.timeframe
        pipe = self.redis.pipeline(transaction=False)
        for b in sorted(buckets):
            pipe.hgetall(self.keys.candle_bucket(series, b))
        out: list[Candle] = []
        for b, h in zip(sorted(buckets), await pipe.execute(), strict=True):
            base = b * BUCKET_SIZE
            out += [
                unpack_candle(tf.open_time(base + int(f)), v)
                for f, v in sorted(h.items(), key=lambda kv: int(kv[0]))
            ]
        return out

    async def _buckets(
        self, series: SeriesId, start_ms: int | None, end_ms: int | None
    ) -> list[int]:
        """Stored bucket numbers overlapping the range, ascending."""
        tf = series.timeframe
        lo = "-inf" if start_ms is None else tf.floor_index(start_ms) // BUCKET_SIZE
        hi = "+inf" if end_ms is None else tf.floor_index(end_ms) // BUCKET_SIZE
        return sorted(
            int(b) for b in await self.redis.zrangebyscore(self.keys.candle_index(series), lo, hi)
        )

    async def open_times(
        self, series: SeriesId, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[int]:
        """Open times stored in the range (reads field names only, not values)."""
        tf = series.timeframe
        buckets = await self._buckets(series, start_ms, end_ms)
        pipe = self.redis.pipeline(transaction=False)
        for b in buckets:
            pipe.hkeys(self.keys.candle_bucket(series, b))
        times: list[int] = []
        for b, fields in zip(buckets, await pipe.execute(), strict=True):
            times += [tf.open_time(b * BUCKET_SIZE + int(f)) for f in fields]
        times.sort()
        return [
            t
            for t in times
            if (start_ms is None or t >= start_ms) and (end_ms is None or t <= end_ms)
        ]

    async def holes(
        self, series: SeriesId, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Hole]:
        """Runs of missing candles between ``start_ms`` and ``end_ms`` (default: the first and
        last stored candle). Candles before the first stored one are history, not holes."""
        tf = series.timeframe
        present = await self._indexes(series, start_ms, end_ms)
        if not len(present) and (start_ms is None or end_ms is None):
            return []
        lo = int(present[0]) if start_ms is None else tf.floor_index(start_ms)
        if start_ms is not None and not tf.is_aligned(start_ms):
            lo += 1
        hi = int(present[-1]) if end_ms is None else tf.floor_index(end_ms)
        return find_holes(series, present, lo, hi)

    async def holes_besides(
        self, series: SeriesId, written: npt.NDArray[np.int64], start_ms: int, end_ms: int
    ) -> list[Hole]:
        """:meth:`holes` of ``start_ms..end_ms`` (aligned open times) knowing that the candles
        opening at ``written`` are stored: only the other open times are looked up."""
        tf = series.timeframe
        lo, hi = tf.floor_index(start_ms), tf.floor_index(end_ms)
        present = floor_indexes(tf, written)
        if len(present) > 1 and not np.all(present[1:] > present[:-1]):
            present = np.unique(present)  # (a file in time order, the usual case, skips this)
        missing = np.setdiff1d(np.arange(lo, hi + 1, dtype=np.int64), present, assume_unique=True)
        if len(missing):
            buckets = np.unique(missing // BUCKET_SIZE).tolist()
            pipe = self.redis.pipeline(transaction=False)
            for b in buckets:
                pipe.hkeys(self.keys.candle_bucket(series, b))
            found = [
                b * BUCKET_SIZE + int(f)
                for b, names in zip(buckets, await pipe.execute(), strict=True)
                for f in names
            ]
            present = np.union1d(present, np.asarray(found, dtype=np.int64))
        return find_holes(series, present, lo, hi)

    async def _indexes(
        self, series: SeriesId, start_ms: int | None, end_ms: int | None
    ) -> npt.NDArray[np.int64]:
        """Sorted indexes of the candles stored in the range, as :meth:`open_times` finds them,
        but reading field names only from buckets that are not full (a full bucket holds every
        index): after a backfill that is a few buckets instead of every candle's field."""
        tf = series.timeframe
        buckets = await self._buckets(series, start_ms, end_ms)
        pipe = self.redis.pipeline(transaction=False)
        for b in buckets:
            pipe.hlen(self.keys.candle_bucket(series, b))
        sizes = await pipe.execute()
        partial = [b for b, n in zip(buckets, sizes, strict=True) if int(n) < BUCKET_SIZE]
        fields: dict[int, list[int]] = {}
        if partial:
            pipe = self.redis.pipeline(transaction=False)
            for b in partial:
                pipe.hkeys(self.keys.candle_bucket(series, b))
            for b, names in zip(partial, await pipe.execute(), strict=True):
                fields[b] = sorted(int(f) for f in names)
        parts = [
            np.asarray(fields[b], dtype=np.int64) + b * BUCKET_SIZE
            if b in fields
            else np.arange(b * BUCKET_SIZE, (b + 1) * BUCKET_SIZE, dtype=np.int64)
            for b in buckets
        ]
        out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        first = None if start_ms is None else tf.floor_index(start_ms)
        if start_ms is not None and not tf.is_aligned(start_ms):
            first = tf.floor_index(start_ms) + 1
        last = None if end_ms is None else tf.floor_index(end_ms)
        keep = np.ones(len(out), dtype=bool)
        if first is not None:
            keep &= out >= first
        if last is not None:
            keep &= out <= last
        return out[keep]
