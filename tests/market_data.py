"""The real market data shipped in ``data/`` (gzip), unpacked once for tests and benchmarks.

Tests and benchmarks read plain CSV lines (slices, rewrites, replays), so each file is unpacked
into ``var/data/`` the first time it is asked for and reused while it is newer than its archive.
The readers of the product accept the ``.gz`` files directly; this is only for code that wants
the text. Nothing here reads a path outside the checkout.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "data"
UNPACKED = ROOT / "var" / "data"

BTC_1H = "btcusdt_binance_1h.csv"
FUTURES_1M = {
    sym: f"{sym.lower()}usdt_binance_futures_1m_2026-02.csv"
    for sym in ("AVAX", "LINK", "LTC", "NEAR")
}


def market_file(name: str) -> Path:
    """The unpacked path of ``data/<name>.gz`` (unpacked on first use, atomically)."""
    src = ARCHIVE / f"{name}.gz"
    if not src.is_file():
        raise FileNotFoundError(f"{src} is not shipped (see data/PROVENANCE.md)")
    dst = UNPACKED / name
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    UNPACKED.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target and rename, so parallel test processes never read half a file.
    fd, tmp = tempfile.mkstemp(dir=UNPACKED, prefix=f".{name}.")
    try:
        with gzip.open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def futures_files() -> list[Path]:
    """The four one-month 1m Binance futures dumps, in symbol order."""
    return [market_file(name) for name in FUTURES_1M.values()]
