"""Shared fixtures: a private redis-server per session, a clean database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from config.settings import Settings, load_settings
from cryptocast.redis_server import RedisServer
from storage.client import Redis, connect
from storage.facade import Storage
from storage.keys import Keys

PROJECT_DATA = Path(__file__).resolve().parents[1] / "cryptocast" / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k in list(os.environ):
        if k.startswith("CRYPTOCAST_"):
            monkeypatch.delenv(k)
    return load_settings(redis_url=redis_server.url)


@pytest.fixture
async def redis(settings: Settings, redis_server: RedisServer) -> AsyncIterator[Redis]:
    if redis_server.proc is None:  # a previous test killed it and did not restart
        redis_server.start()
    client = await connect(settings)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def storage(redis: Redis) -> Storage:
    """Every store over the test's Redis, under the default prefix (passed explicitly)."""
    return Storage.build(redis, Keys())
