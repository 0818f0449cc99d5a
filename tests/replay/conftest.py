"""Fixtures of the replay exchange tests: real 1m candles sliced into small CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.replay.support import slice_csv


@pytest.fixture
def link_csv(tmp_path: Path) -> Path:
    return slice_csv(tmp_path, "linkusdt_binance_futures_1m_2026-02.csv")


@pytest.fixture
def ltc_csv(tmp_path: Path) -> Path:
    return slice_csv(tmp_path, "ltcusdt_binance_futures_1m_2026-02.csv")
