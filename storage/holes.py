"""Holes in a series: runs of missing candles, found from the indexes that are present."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.series import SeriesId


@dataclass(frozen=True, slots=True)
class Hole:
    """A run of missing candles: open times ``first``..``last`` inclusive, ``count`` candles."""

    first: int
    last: int
    count: int

    def to_dict(self) -> dict[str, int]:
        return {"first": self.first, "last": self.last, "count": self.count}


def find_holes(
    series: SeriesId, present: Sequence[int] | npt.NDArray[np.int64], lo: int, hi: int
) -> list[Hole]:
    """Missing indexes of ``lo..hi`` (inclusive) given the sorted ``present`` indexes."""
    tf = series.timeframe
    p = np.asarray(present, dtype=np.int64)
    p = p[(p >= lo) & (p <= hi)]
    # Between neighbours of lo-1, the present indexes and hi+1, a step over 1 is a hole.
    bounds = np.concatenate(([lo - 1], p, [hi + 1]))
    gaps = np.flatnonzero(np.diff(bounds) > 1)
    return [
        Hole(tf.open_time(a + 1), tf.open_time(b - 1), b - a - 1)
        for a, b in zip(bounds[gaps].tolist(), bounds[gaps + 1].tolist(), strict=True)
    ]
