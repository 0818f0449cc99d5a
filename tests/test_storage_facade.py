"""One storage facade per process, and no store that falls back to the default key prefix.

A store built without its keys once silently used ``cryptocast:`` whatever the deployment's
``CRYPTOCAST_KEY_PREFIX`` said; now the keys are a required argument of every store and the
facade hands the settings' prefix to all of them. These tests keep it so, without a Redis
server (building a store talks to nobody)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from redis.asyncio import Redis

import storage
from config.settings import load_settings
from storage.facade import Storage
from storage.keys import Keys
from storage.leases import Replicas

STORAGE_DIR = Path(storage.__file__).parent


def _store_classes() -> list[type]:
    """Every class of ``storage/`` whose constructor takes ``keys``: the stores."""
    found: dict[str, type] = {}
    for mod in pkgutil.iter_modules([str(STORAGE_DIR)]):
        module = importlib.import_module(f"storage.{mod.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and "keys" in _params(cls):
                found[cls.__qualname__] = cls
    return sorted(found.values(), key=lambda c: c.__qualname__)


def _params(cls: type) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return {}


STORES = [c for c in _store_classes() if c is not Storage]


def test_the_stores_are_found() -> None:
    names = {c.__name__ for c in STORES}
    assert {"CandleStore", "PredictionBus", "ModelRegistry", "Leases", "PathStore"} <= names


@pytest.mark.parametrize("store", STORES, ids=lambda c: c.__name__)
def test_a_store_built_without_keys_is_a_type_error(store: type) -> None:
    assert _params(store)["keys"].default is inspect.Parameter.empty
    with pytest.raises(TypeError, match="keys"):
        store(Redis())


def test_the_facade_holds_every_store() -> None:
    held = {f.type for f in dataclasses.fields(Storage)}
    assert {c.__name__ for c in STORES} <= held


def test_storage_code_never_spells_the_default_prefix() -> None:
    """``Keys()`` (the default prefix) belongs to tests and tools, never to storage/."""
    offenders = [
        f"{p.name}:{n}: {line.strip()}"
        for p in sorted(STORAGE_DIR.glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "Keys()" in line or "or Keys(" in line or "default_factory=Keys" in line
    ]
    assert offenders == []


def test_from_settings_puts_every_store_under_the_settings_prefix() -> None:
    settings = load_settings(
        key_prefix="other", retention=500, event_stream_len=700, prediction_stream_len=90
    )
    s = Storage.from_settings(Redis(), settings)
    assert s.keys == Keys("other")
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        if isinstance(value, Replicas):
            assert value.key.startswith("other:"), f.name
        elif f.name not in ("redis", "keys"):
            assert value.keys == Keys("other"), f.name
            assert value.redis is s.redis, f.name
    assert (s.candles.retention, s.candles.event_stream_len) == (500, 700)
    assert s.predictions.stream_len == 90
