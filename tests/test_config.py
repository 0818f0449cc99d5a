from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.settings import SettingsError, load_settings, mask_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("CRYPTOCAST_"):
            monkeypatch.delenv(k)


def test_defaults_are_sane() -> None:
    s = load_settings()
    assert s.series == ["binance:BTC/USDT:1m"]
    assert s.retention == 100_000 and s.clock == "wall"
    assert s.model.units == 50 and s.model.layers == 2 and s.model.dropout == 0.2


def test_env_vars_and_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOCAST_SERIES", "binance:BTC/USDT:1m, binanceusdm:LINK/USDT:USDT:5m")
    monkeypatch.setenv("CRYPTOCAST_MODEL__UNITS", "8")
    monkeypatch.setenv("CRYPTOCAST_SCHEDULE__RETRAIN_EVERY", "7")
    s = load_settings()
    assert [x.key for x in s.series_ids] == ["binance:BTC/USDT:1m", "binanceusdm:LINK/USDT:USDT:5m"]
    assert s.model.units == 8 and s.schedule.retrain_every == 7


def test_toml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text('retention = 5000\nseries = ["binance:ETH/USDT:1h"]\n[model]\nwindow = 30\n')
    s = load_settings(f)
    assert s.retention == 5000 and s.series == ["binance:ETH/USDT:1h"] and s.model.window == 30
    monkeypatch.setenv("CRYPTOCAST_RETENTION", "7000")
    monkeypatch.setenv("CRYPTOCAST_CONFIG", str(f))
    s = load_settings()
    assert s.retention == 7000 and s.model.window == 30  # env beats file


@pytest.mark.parametrize(
    ("env", "value", "detail"),
    [
        ("RETENTION", "-5", "Input should be greater than or equal to 100 (got '-5')"),
        ("RETENTION", "lots", "Input should be a valid integer"),
        ("SERIES", "binance:BTC/USDT", "'binance:BTC/USDT': expected exchange:symbol:timeframe"),
        (
            "SERIES",
            "binance:BTC/USDT:1m,binance:BTC/USDT:1m",
            "'binance:BTC/USDT:1m' is listed twice",
        ),
        ("SERIES", " , ", "at least one series"),
        ("SERIES", "binance:BTC/USDT:7m", "unsupported timeframe '7m'"),
        ("REDIS_URL", "http://h:1", "scheme 'http'"),
        ("REDIS_URL", "redis://", "the URL has no"),
        ("CLOCK", "sundial", "Input should be 'wall' or 'exchange'"),
        ("BINANCE_WS_URL", "ftp://x", ""),
        ("KEY_PREFIX", "a b", ""),
        ("MODEL__UNITS", "0", "Input should be greater than or equal to 1"),
        ("MODEL__DROPOUT", "1.5", ""),
        ("MODEL__FEATURES", '["ret","moon"]', ""),
        ("SCHEDULE__RETRAIN_EVERY", "0", ""),
        ("LOG_FORMAT", "xml", ""),
        ("METRICS_PORT", "70000", ""),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, detail: str
) -> None:
    monkeypatch.setenv(f"CRYPTOCAST_{env}", value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    assert msg.startswith(f"invalid setting CRYPTOCAST_{env}: ")
    assert detail in msg
    assert "\n" not in msg


def test_unknown_key_in_file_and_bad_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("retension = 5\n")
    with pytest.raises(SettingsError, match="unknown setting CRYPTOCAST_RETENSION"):
        load_settings(f)
    f.write_text("retention = = 5\n")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        load_settings(f)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOCAST_REDIS_URL", "redis://:hunter2@db:6379/0")
    monkeypatch.setenv("CRYPTOCAST_REDIS_PASSWORD", "s3cret")
    s = load_settings()
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s)
    assert "hunter2" not in str(s.model_dump())
    assert s.redis_url_masked == "redis://:***@db:6379/0"
    monkeypatch.setenv("CRYPTOCAST_REDIS_URL", "ftp://:hunter2@db")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "hunter2" not in str(e.value)


def test_mask_url_keeps_user_and_port() -> None:
    assert mask_url("rediss://app:pw@h:6380/1") == "rediss://app:***@h:6380/1"
    assert mask_url("redis://h:1") == "redis://h:1"
