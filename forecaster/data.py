"""Columnar candle arrays: the one input format of the forecaster's numeric code.

Everything downstream (features, training, fast inference, baselines, the backtest) works on
:class:`CandleArrays` rather than lists of :class:`~core.schemas.Candle`, so the per-candle
Python overhead is paid once, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.schemas import Candle
from core.series import Timeframe

__all__ = ["CandleArrays", "DataError"]


class DataError(ValueError):
    """Candles that cannot be turned into arrays (unsorted beyond repair, misaligned, empty)."""


@dataclass(frozen=True, slots=True, eq=False)
class CandleArrays:
    """Candles of one series as columns, sorted by open time, one row per open time.

    ``index`` is the dense candle index of each row (see :meth:`Timeframe.index`): two rows are
    adjacent candles exactly when their indices differ by one, which is how holes are found for
    every timeframe, monthly ones included.
    """

    timeframe: Timeframe
    open_time: np.ndarray  # int64, UTC epoch ms
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    index: np.ndarray  # int64 dense candle index

    # construction --------------------------------------------------------------------------
    @classmethod
    def from_candles(cls, candles: Iterable[Candle], timeframe: Timeframe) -> CandleArrays:
        """Build arrays from candles in any order; a repeated open time keeps the last one."""
        items = list(candles)
        n = len(items)
        cols = np.empty((5, n), dtype=np.float64)
        times = np.empty(n, dtype=np.int64)
        for i, c in enumerate(items):
            times[i] = c.open_time
            cols[0, i] = c.open
            cols[1, i] = c.high
            cols[2, i] = c.low
            cols[3, i] = c.close
            cols[4, i] = c.volume
        return cls.from_columns(timeframe, times, *cols)

    @classmethod
    def from_columns(
        cls,
        timeframe: Timeframe,
        open_time: Sequence[int] | np.ndarray,
        open: Sequence[float] | np.ndarray,
        high: Sequence[float] | np.ndarray,
        low: Sequence[float] | np.ndarray,
        close: Sequence[float] | np.ndarray,
        volume: Sequence[float] | np.ndarray,
    ) -> CandleArrays:
        """Build arrays from columns; rows are sorted and de-duplicated (last write wins)."""
        t = np.asarray(open_time, dtype=np.int64)
        cols = [np.asarray(x, dtype=np.float64) for x in (open, high, low, close, volume)]
        if any(c.shape != t.shape for c in cols) or t.ndim != 1:
            raise DataError("candle columns must be 1-D and of equal length")
        if t.size > 1 and not bool(np.all(np.diff(t) > 0)):
            # Stable sort then keep the last of equal open times: a corrected candle replaces
            # the old one, as the candle store does.
            order = np.argsort(t, kind="stable")
            t = t[order]
            cols = [c[order] for c in cols]
            keep = np.ones(t.size, dtype=bool)
            keep[:-1] = t[1:] != t[:-1]
            t = t[keep]
            cols = [c[keep] for c in cols]
        idx = _dense_index(t, timeframe)
        o, h, lo, c, v = cols
        return cls(timeframe, t, o, h, lo, c, v, idx)

    def shifted(self, candle: Candle) -> CandleArrays:
        """These rows less the first, plus ``candle`` as the next candle after the last (the
        window moved on by one; the caller knows it is the next open time)."""
        if candle.open_time != self.timeframe.next_open(int(self.open_time[-1])):
            raise DataError(f"candle {candle.open_time} does not follow {self.open_time[-1]}")

        def roll(col: np.ndarray, value: float | int) -> np.ndarray:
            out = np.empty_like(col)
            out[:-1] = col[1:]
            out[-1] = value
            return out

        return CandleArrays(
            self.timeframe,
            roll(self.open_time, candle.open_time),
            roll(self.open, candle.open),
            roll(self.high, candle.high),
            roll(self.low, candle.low),
            roll(self.close, candle.close),
            roll(self.volume, candle.volume),
            roll(self.index, int(self.index[-1]) + 1),
        )

    # shape ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.open_time.size)

    def slice(self, start: int | None, stop: int | None) -> CandleArrays:
        """Rows ``[start, stop)`` (views, no copy)."""
        s = slice(start, stop)
        return CandleArrays(
            self.timeframe,
            self.open_time[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            self.volume[s],
            self.index[s],
        )

    def tail(self, n: int) -> CandleArrays:
        """The last ``n`` rows (all of them when there are fewer)."""
        return self.slice(max(len(self) - n, 0), None)

    def since(self, open_time: int) -> CandleArrays:
        """Rows whose open time is ``>= open_time``."""
        return self.slice(int(np.searchsorted(self.open_time, open_time, side="left")), None)

    # holes ---------------------------------------------------------------------------------
    def segment_ids(self) -> np.ndarray:
        """Per row, the number of the contiguous run it belongs to (0, 1, ...)."""
        ids = np.zeros(len(self), dtype=np.int64)
        if len(self) > 1:
            ids[1:] = np.cumsum(np.diff(self.index) != 1)
        return ids

    def segments(self) -> list[tuple[int, int]]:
        """Contiguous runs as ``[start, stop)`` row ranges; a hole (missing open time) splits."""
        n = len(self)
        if n == 0:
            return []
        breaks = np.flatnonzero(np.diff(self.index) != 1) + 1
        starts = [0, *breaks.tolist()]
        stops = [*breaks.tolist(), n]
        return list(zip(starts, stops, strict=True))

    def holes(self) -> list[tuple[int, int]]:
        """Missing open-time ranges as ``(first_missing, last_missing)`` open times."""
        out: list[tuple[int, int]] = []
        for start, _ in self.segments()[1:]:
            first = self.timeframe.open_time(int(self.index[start - 1]) + 1)
            last = self.timeframe.open_time(int(self.index[start]) - 1)
            out.append((first, last))
        return out

    def is_contiguous(self) -> bool:
        """True when no open time is missing between the first and last row."""
        return len(self) < 2 or bool(np.all(np.diff(self.index) == 1))


def _dense_index(open_time: np.ndarray, timeframe: Timeframe) -> np.ndarray:
    if open_time.size == 0:
        return np.empty(0, dtype=np.int64)
    if not timeframe.monthly and timeframe.text != "1w":
        # Fixed frames: plain modulo arithmetic, vectorised.
        if bool(np.any(open_time % timeframe.ms != 0)):
            bad = int(open_time[np.flatnonzero(open_time % timeframe.ms != 0)[0]])
            raise DataError(f"open time {bad} is not aligned to {timeframe}")
        return open_time // timeframe.ms
    try:
        return np.fromiter(
            (timeframe.index(int(t)) for t in open_time), dtype=np.int64, count=open_time.size
        )
    except ValueError as e:
        raise DataError(str(e)) from None
