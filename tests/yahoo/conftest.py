"""Fixtures of the Yahoo tests: yfinance started fresh for each test, the real daily file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yfinance as yf
from yfinance import cache as yf_cache
from yfinance.data import SingletonMeta, YfData

from tests.yahoo.fake import SYMBOL, Row, load_daily, synth_minutes


@pytest.fixture(scope="module", autouse=True)
def yf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Before yfinance first opens its caches: the tz/cookie databases go to a temp dir, not ~.
    path = tmp_path_factory.mktemp("yfinance-cache")
    yf.set_tz_cache_location(str(path))
    return path


@pytest.fixture(autouse=True)
def fresh_yfinance() -> Iterator[None]:
    """Each test starts like a fresh process: no cookie, crumb, timezone or response cached."""

    def reset() -> None:
        yf_cache.get_cookie_cache().store("curlCffi", None)
        yf_cache.get_tz_cache().store(SYMBOL, None)
        SingletonMeta._instances.pop(YfData, None)  # the process-wide cookie/crumb holder
        YfData.cache_get.cache_clear()

    reset()
    yield
    reset()


@pytest.fixture(scope="module")
def daily() -> list[Row]:
    return load_daily()


@pytest.fixture(scope="module")
def minutes(daily: list[Row]) -> list[Row]:
    return synth_minutes(daily, "2022-02-05", 24)  # 2022-02-05 .. 2022-02-28
