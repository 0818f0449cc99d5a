"""Binary encoding of stored candles.

A candle is stored as 48 bytes: five little-endian float64 (open, high, low, close, volume) and an
int64 trade count (-1 for unknown). Fixed-width binary keeps each value under Redis's
``hash-max-listpack-value`` (64 bytes), so the bucketed hashes of the candle store stay in the
compact listpack encoding; see ``bench/storage_bench.py`` for the bytes-per-candle figure.
Float64 round-trips every price a CSV or exchange gives exactly as Python parsed it.
"""

from __future__ import annotations

import struct

from core.schemas import Candle

_PACK = struct.Struct("<5dq")
PACKED_SIZE = _PACK.size
# What the upsert script reads: uint16 bucket slot, uint16 field, then the packed candle.
_RECORD = struct.Struct("<HH5dq")


def pack_candle(c: Candle) -> bytes:
    return _PACK.pack(
        c.open, c.high, c.low, c.close, c.volume, -1 if c.trades is None else c.trades
    )


def unpack_candle(open_time: int, raw: bytes) -> Candle:
    o, h, lo, cl, v, n = _PACK.unpack(raw)
    return Candle(open_time, o, h, lo, cl, v, None if n < 0 else n)


def pack_record(slot: int, field: int, c: Candle) -> bytes:
    """One record of the upsert script's binary argument (see upsert_candles.lua)."""
    n = -1 if c.trades is None else c.trades
    return _RECORD.pack(slot, field, c.open, c.high, c.low, c.close, c.volume, n)
