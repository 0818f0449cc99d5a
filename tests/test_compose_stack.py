"""The compose deployment, run: the image built, the stack up, candles in, predictions out.

docker-compose.yml itself, with only tests/deploy/docker-compose.override.yml and an .env a user
would write (tests/deploy/env.template), brings up Redis, the ingester, the forecaster and the
``web`` profile, plus the replay exchange as one more service on the compose network replaying
real Binance candles (cryptocast/data). Everything is checked from outside, as an operator
would: container health and uids through Docker, Redis through a cryptocast container on the
compose network (tests/deploy/probe.py), the API through the published loopback port.

``make test`` runs pytest through scripts/ensure-docker.sh, which provides the engine (a private
dockerd where none runs) and local base images where no registry is reachable. The image build
is cached in the engine's data root, so only the first run pays for it. Without an engine the
tests skip, saying why.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cryptocast.redis_server import free_port
from ingest.csvfiles import read_csv
from tests.compose_support import ROOT, Stack, compose_base, engine_problem, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SERIES = "binance:LINK/USDT:1m"
CSV = ROOT / "cryptocast/data/linkusdt_binance_futures_1m_2026-02_head2400.csv"
IMAGE = "cryptocast:deploy-test"
# One project per checkout: two checkouts' test runs on one engine never touch each other's.
PROJECT = f"cryptocast-deploy-test-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]}"
APP = ("redis", "ingest", "forecaster", "web", "exchange")
STEP = 60_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = engine_problem()
    if problem is not None:
        pytest.skip(problem)
    if compose_base() is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    logs = ROOT / "var/deploy-test"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "build.log").open("w") as log:
        built = subprocess.run(
            [str(ROOT / "scripts/build-image.sh")],
            env={**os.environ, "CRYPTOCAST_IMAGE": IMAGE},
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=3000,
            check=False,
        )
    assert built.returncode == 0, (logs / "build.log").read_text()[-6000:]

    project = tmp_path_factory.mktemp("compose")
    shutil.copy(ROOT / "docker-compose.yml", project / "docker-compose.yml")
    shutil.copy(ROOT / "tests/deploy/docker-compose.override.yml", project)
    shutil.copytree(ROOT / "deploy", project / "deploy")
    template = (ROOT / "tests/deploy/env.template").read_text()
    (project / ".env").write_text(
        template.format(
            redis_password=secrets.token_urlsafe(24),
            web_token=secrets.token_urlsafe(24),
            web_port=free_port(),
            image=IMAGE,
            redis_image=os.environ.get("CRYPTOCAST_REDIS_IMAGE", "redis:7"),
        )
    )
    s = Stack(project, PROJECT)
    s.compose("down", "--volumes", "--remove-orphans", check=False)  # a crashed run's leftovers
    try:
        s.compose("up", "-d", "--no-build", timeout=600)
        yield s
    finally:
        (logs / "compose.log").write_text(s.logs(tail=0))
        (logs / "metrics.txt").write_text(
            "".join(f"# --- {svc}\n{s.metrics(svc)}" for svc in ("ingest", "forecaster"))
        )
        s.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)


def env_value(stack: Stack, key: str) -> str:
    for line in (stack.directory / ".env").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise KeyError(key)


def state(stack: Stack) -> dict[str, Any]:
    series = stack.probe()["series"][SERIES]
    assert isinstance(series, dict)
    return series


def real_candles() -> dict[int, dict[str, Any]]:
    return {c.open_time: c.to_dict() for c in read_csv(CSV).candles}


def assert_no_candle_lost(series: dict[str, Any]) -> None:
    """One contiguous run of real candles (the CSV's values), no hole."""
    candles = series["candles"]
    times = [c["open_time"] for c in candles]
    assert times == list(range(times[0], times[-1] + STEP, STEP)), "a candle is missing"
    assert series["holes"] == []
    real = real_candles()
    for c in candles:
        expected = real[c["open_time"]]
        for field in ("open", "high", "low", "close", "volume"):
            assert c[field] == pytest.approx(expected[field], rel=1e-9), (c, expected)


def missing_predictions(series: dict[str, Any]) -> list[int]:
    """Closed candles since the first prediction that have none (none may have two)."""
    as_ofs = [p["as_of"] for p in series["predictions"]]
    assert len(as_ofs) == len(set(as_ofs)), "a candle got two predictions"
    assert all(p["target_time"] == p["as_of"] + STEP for p in series["predictions"])
    assert as_ofs == sorted(as_ofs)
    times = {c["open_time"] for c in series["candles"]}
    assert set(as_ofs) <= times, "a prediction for a candle that is not stored"
    return sorted(t for t in times if as_ofs[0] <= t <= as_ofs[-1] and t not in set(as_ofs))


def assert_nothing_lost(series: dict[str, Any]) -> None:
    assert_no_candle_lost(series)
    assert missing_predictions(series) == [], "a prediction is missing"


def skipped(stack: Stack, service: str = "forecaster") -> dict[str, float]:
    """The service's cryptocast_events_skipped_total by reason (since its process started)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(stack.metrics(service)):
        for sample in family.samples:
            if sample.name == "cryptocast_events_skipped_total":
                out[sample.labels["reason"]] = sample.value
    return out


def caught_up(stack: Stack, after: int) -> bool:
    """The forecaster has predicted the newest candle, which is newer than ``after``."""
    s = state(stack)
    preds, candles = s["predictions"], s["candles"]
    return bool(
        preds
        and candles
        and candles[-1]["open_time"] > after
        and preds[-1]["as_of"] == candles[-1]["open_time"]
        and s["pending_events"] == 0
    )


def test_stack_is_healthy_runs_as_10001_and_keeps_redis_private(stack: Stack) -> None:
    wait_until(
        lambda: stack.all_healthy(APP), 300, "every service healthy", interval=3,
        on_fail=lambda: "\n".join(f"{s}: {stack.health(s)}" for s in APP) + stack.logs(),
    )  # fmt: skip
    for service in ("ingest", "forecaster", "web", "exchange"):
        assert stack.inspect(service)["Config"]["User"] == "10001:10001"
        assert stack.process_uids(service) == {10001}, service
    # the forecaster's model cache is a named volume the non-root user can write
    models = "/home/cryptocast/var/models"
    mounts = {m["Destination"]: m for m in stack.inspect("forecaster")["Mounts"]}
    assert mounts[models]["Type"] == "volume"
    touch = f"import pathlib; pathlib.Path('{models}/.probe').write_text('ok')"
    stack.compose("exec", "-T", "forecaster", "python", "-c", touch)
    redis = stack.inspect("redis")
    assert not redis["HostConfig"]["PortBindings"], "Redis is published on the host"
    assert not any(redis["NetworkSettings"]["Ports"].values())
    assert stack.compose("port", "redis", "6379", check=False).stdout.strip() in ("", ":0")
    probe = stack.probe()
    assert probe["anonymous_refused"], "Redis answers without the password"
    assert probe["appendonly"] == "yes"
    mounts = {m["Destination"]: m for m in redis["Mounts"]}
    assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"].endswith("redis-data")


def test_real_candles_in_predictions_out_over_the_network_and_the_api(stack: Stack) -> None:
    wait_until(
        lambda: len(state(stack)["predictions"]) >= 5, 420, "five predictions in Redis",
        interval=3, on_fail=lambda: stack.logs("ingest", "forecaster"),
    )  # fmt: skip
    s = state(stack)
    assert len(s["candles"]) >= 1000  # the backfilled history, then live candles
    assert_nothing_lost(s)

    base = f"http://127.0.0.1:{env_value(stack, 'CRYPTOCAST_WEB_PORT')}"
    token = env_value(stack, "CRYPTOCAST_WEB__TOKEN")
    path = "/api/series/binance:LINK%2FUSDT:1m/predictions"
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get(path).status_code == 401  # the token is required beyond loopback
        r = client.get(path, params={"limit": 2000}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        api = [p["as_of"] for p in r.json()["predictions"]]
    in_redis = [p["as_of"] for p in s["predictions"]]
    assert api[: len(in_redis)] == in_redis  # the same stream, read later (so maybe longer)


def test_forecaster_restart_loses_no_candle_and_no_prediction(stack: Stack) -> None:
    before = state(stack)
    last = before["candles"][-1]["open_time"]
    stack.compose("restart", "forecaster", timeout=120)
    wait_until(
        lambda: caught_up(stack, last + 5 * STEP), 300, "the restarted forecaster to catch up",
        interval=2, on_fail=lambda: stack.logs("forecaster"),
    )  # fmt: skip
    after = state(stack)
    assert_nothing_lost(after)  # the candles that closed while it was down were predicted too
    assert after["predictions"][: len(before["predictions"])] == before["predictions"]
    assert len(after["predictions"]) >= len(before["predictions"]) + 5


KILL: dict[str, Any] = {}  # what the ingester kill left, for the prediction check below


def test_ingester_kill_loses_no_candle_and_the_restart_policy_brings_it_back(
    stack: Stack,
) -> None:
    # A crash, as the kernel's OOM killer would do it: SIGKILL to the container's processes
    # from outside. (`docker kill` counts as a manual stop, which `unless-stopped` respects.)
    ingest = stack.inspect("ingest")
    restarts = ingest["RestartCount"]
    before = state(stack)
    last = before["candles"][-1]["open_time"]
    skipped_before = skipped(stack)
    os.kill(ingest["State"]["Pid"], 9)
    wait_until(
        lambda: stack.inspect("ingest")["RestartCount"] > restarts, 120,
        "the restart policy to bring the ingester back", on_fail=lambda: stack.logs("ingest"),
    )  # fmt: skip
    wait_until(
        lambda: caught_up(stack, last + 10 * STEP), 300, "candles and predictions after the kill",
        interval=2, on_fail=lambda: stack.logs("ingest", "forecaster"),
    )  # fmt: skip
    wait_until(
        lambda: stack.all_healthy(APP), 180, "every service healthy again", interval=3,
        on_fail=lambda: "\n".join(f"{s}: {stack.health(s)}" for s in APP),
    )  # fmt: skip
    after = state(stack)
    assert_no_candle_lost(after)  # the gap fill brought back what closed while it was down
    assert after["predictions"][: len(before["predictions"])] == before["predictions"]
    assert len(after["predictions"]) > len(before["predictions"]) + 5
    # Predictions flow again; a candle left without one could only be one the forecaster
    # skipped for a hole in its window (the next test requires that there is none).
    missing = missing_predictions(after)
    holes_seen = skipped(stack).get("incomplete_window", 0) - skipped_before.get(
        "incomplete_window", 0
    )
    assert len(missing) <= holes_seen, (missing, skipped(stack))
    assert all(last < t <= last + 20 * STEP for t in missing), missing
    KILL["missing"] = missing


def test_ingester_kill_loses_no_prediction(stack: Stack) -> None:
    if "missing" not in KILL:
        pytest.skip("needs the ingester kill above")
    assert KILL["missing"] == [], "candles without a prediction after the ingester kill"


def test_down_and_up_keep_the_data(stack: Stack) -> None:
    before = state(stack)
    stack.compose("down", "--timeout", "30", timeout=180)  # no --volumes: what a user runs
    assert stack.container("redis") == ""
    # Redis (and the web, to read it) first: what comes back is what the volume kept, before
    # the ingester writes anything (the replay exchange starts its replay over)
    stack.compose("up", "-d", "--no-build", "redis", "web", timeout=600)
    wait_until(
        lambda: stack.all_healthy(("redis", "web")), 180, "Redis and the web back", interval=2
    )
    after = state(stack)
    candles = {c["open_time"]: c for c in after["candles"]}
    for c in before["candles"]:  # the AOF on the named volume brought every candle back
        assert candles.get(c["open_time"]) == c
    kept = {p["as_of"]: p for p in after["predictions"]}
    for p in before["predictions"]:
        assert kept.get(p["as_of"]) == p
    stack.compose("up", "-d", "--no-build", timeout=600)
    wait_until(
        lambda: stack.all_healthy(APP), 300, "every service healthy after up", interval=3,
        on_fail=lambda: "\n".join(f"{s}: {stack.health(s)}" for s in APP) + stack.logs(),
    )  # fmt: skip
