"""Candles as columns (numpy arrays): the bulk form of :class:`~core.schemas.Candle`.

A backfill moves hundreds of thousands of candles from a file into Redis. As Python objects each
candle costs microseconds to build, validate and pack; as columns the whole file is checked by
:func:`candle_problems` (the same rules, in the same order, as
:func:`~core.schemas.candle_problem`) and packed for the upsert script in a few vector
operations. Live ingest keeps :class:`Candle` objects: it handles one candle at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.schemas import MAX_PRICE, MAX_VOLUME, REJECT_REASONS, Candle
from core.series import Timeframe
from storage.codec import pack_record
from storage.keys import BUCKET_SIZE

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

OK = -1
"""The code :func:`candle_problems` gives a valid candle; others index :data:`REJECT_REASONS`."""
UNKNOWN_TRADES = -1
BAD_TRADES = -2
"""What a negative trade count from a source is kept as, so that it is rejected (``malformed``)
rather than read as :data:`UNKNOWN_TRADES`."""
_CODE = {reason: i for i, reason in enumerate(REJECT_REASONS)}

# One record of the upsert script's binary argument, as codec.pack_record writes it: uint16
# bucket slot, uint16 field, five float64 and an int64 trade count, little-endian, unpadded.
RECORD_DTYPE = np.dtype(
    [("slot", "<u2"), ("field", "<u2"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"),
     ("close", "<f8"), ("volume", "<f8"), ("trades", "<i8")]
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CandleColumns:
    """Candles as equal-length arrays; ``trades`` is :data:`UNKNOWN_TRADES` where the count is
    unknown (and :data:`BAD_TRADES` where a source gave a negative one)."""

    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    trades: I64

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def take(self, which: Any) -> CandleColumns:
        """The candles selected by a boolean mask, an index array or a slice."""
        return CandleColumns(
            self.open_time[which],
            self.open[which],
            self.high[which],
            self.low[which],
            self.close[which],
            self.volume[which],
            self.trades[which],
        )

    def candles(self) -> list[Candle]:
        """The same candles as objects (``tolist`` gives Python ints and floats)."""
        return [
            Candle(t, o, h, lo, c, v, None if n == UNKNOWN_TRADES else n)
            for t, o, h, lo, c, v, n in zip(
                self.open_time.tolist(),
                self.open.tolist(),
                self.high.tolist(),
                self.low.tolist(),
                self.close.tolist(),
                self.volume.tolist(),
                self.trades.tolist(),
                strict=True,
            )
        ]

    @classmethod
    def from_candles(cls, candles: Sequence[Candle]) -> CandleColumns:
        return cls(
            np.array([c.open_time for c in candles], dtype=np.int64),
            np.array([c.open for c in candles], dtype=np.float64),
            np.array([c.high for c in candles], dtype=np.float64),
            np.array([c.low for c in candles], dtype=np.float64),
            np.array([c.close for c in candles], dtype=np.float64),
            np.array([c.volume for c in candles], dtype=np.float64),
            np.array([_trades(c.trades) for c in candles], dtype=np.int64),
        )


def _trades(n: int | None) -> int:
    return UNKNOWN_TRADES if n is None else BAD_TRADES if n < 0 else n


def floor_indexes(tf: Timeframe, times: I64) -> I64:
    """:meth:`Timeframe.floor_index` of every time (vectorised for fixed frames and weeks)."""
    if tf.monthly:
        return np.array([tf.floor_index(int(t)) for t in times], dtype=np.int64)
    base = tf.open_time(0)  # 0, or the first Monday for weeks
    return (times - base) // tf.ms


def open_times(tf: Timeframe, indexes: I64) -> I64:
    """:meth:`Timeframe.open_time` of every index."""
    if tf.monthly:
        return np.array([tf.open_time(int(i)) for i in indexes], dtype=np.int64)
    return indexes * tf.ms + tf.open_time(0)


def candle_problems(
    cols: CandleColumns,
    timeframe: Timeframe,
    now_ms: int | None = None,
    close_time: I64 | None = None,
) -> npt.NDArray[np.int8]:
    """Per candle, :data:`OK` or the index in :data:`REJECT_REASONS` of the reason
    :func:`~core.schemas.candle_problem` gives it (the first failing rule, same order)."""
    o, h, lo, cl, v = cols.open, cols.high, cols.low, cols.close, cols.volume
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(cl)
        idx = floor_indexes(timeframe, cols.open_time)
        aligned = open_times(timeframe, idx) == cols.open_time
        next_open = open_times(timeframe, idx + 1)
        rules: list[tuple[str, Any]] = [
            ("not_finite", ~finite | ~np.isfinite(v)),
            ("non_positive_price", (o <= 0) | (h <= 0) | (lo <= 0) | (cl <= 0)),
            ("out_of_range", (h > MAX_PRICE) | (v > MAX_VOLUME)),
            ("high_low", ~((lo <= o) & (o <= h) & (lo <= cl) & (cl <= h))),
            ("negative_volume", v < 0),
            ("malformed", cols.trades <= BAD_TRADES),
            ("misaligned", ~aligned),
        ]
        closes_at = next_open
        if close_time is not None:
            rules.append(
                ("wrong_interval", (close_time < cols.open_time) | (close_time >= next_open))
            )
            closes_at = close_time + 1
        if now_ms is not None:
            rules.append(("future", closes_at > now_ms))
    if not len(cols):
        return np.empty(0, dtype=np.int8)
    return np.select([mask for _, mask in rules], [_CODE[r] for r, _ in rules], default=OK).astype(
        np.int8
    )


def pack_records(cols: CandleColumns, slots: npt.NDArray[Any], fields: npt.NDArray[Any]) -> bytes:
    """The upsert script's binary argument for these candles (see upsert_candles.lua)."""
    rec = np.empty(len(cols), dtype=RECORD_DTYPE)
    rec["slot"], rec["field"] = slots, fields
    rec["open"], rec["high"], rec["low"] = cols.open, cols.high, cols.low
    rec["close"], rec["volume"], rec["trades"] = cols.close, cols.volume, cols.trades
    return rec.tobytes()


def upsert_chunks(
    tf: Timeframe, batch: Sequence[Candle] | CandleColumns, size: int
) -> Iterator[tuple[bytes, list[int]]]:
    """Per ``size`` candles: the upsert script's binary argument and the bucket numbers its
    slots refer to (see upsert_candles.lua). Columns are packed as arrays, objects one by one."""
    if isinstance(batch, CandleColumns):
        idx = floor_indexes(tf, batch.open_time)
        if np.any(open_times(tf, idx) != batch.open_time):
            raise ValueError(f"open times not aligned to {tf}: validate candles before storing")
        for start in range(0, len(batch), size):
            part = slice(start, start + size)
            buckets, slots = np.unique(idx[part] // BUCKET_SIZE, return_inverse=True)
            blob = pack_records(batch.take(part), slots + 1, idx[part] % BUCKET_SIZE)
            yield blob, buckets.tolist()
        return
    for start in range(0, len(batch), size):
        bucket_slots: dict[int, int] = {}
        records = []
        for c in batch[start : start + size]:
            b, f = divmod(tf.index(c.open_time), BUCKET_SIZE)
            slot = bucket_slots.setdefault(b, len(bucket_slots) + 1)
            records.append(pack_record(slot, f, c))
        yield b"".join(records), list(bucket_slots)
