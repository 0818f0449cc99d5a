"""``cryptocast up``: ingest + forecaster on one machine, with a private Redis when none is set.

When ``CRYPTOCAST_REDIS_URL`` is not configured (neither in the environment nor in the TOML
file: the built-in default does not count), ``up`` starts its own ``redis-server`` on 127.0.0.1
(port 6380, or a free one when that is taken) with its data and AOF under
``<data_dir>/redis``, so a restart resumes where the last run stopped. The two services run as
child processes (``python -m cryptocast ingest`` and ``... forecast``); SIGTERM or Ctrl-C stops
them, then the private Redis. If either service dies, the other is stopped too and ``up`` exits
1, so a supervisor (systemd, a container runtime) can restart the whole.

With ``CRYPTOCAST_METRICS_PORT=N`` the ingester serves metrics on N and the forecaster on N+1.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from types import FrameType

import structlog
import typer

from config.settings import ENV_PREFIX, Settings
from cryptocast.app import app
from cryptocast.instance import Instance, announced, user_chose
from cryptocast.procs import ChildService, stop_all
from cryptocast.redis_server import RedisServer, free_port
from cryptocast.runtime import AppState, fail

log = structlog.get_logger(__name__)

PRIVATE_REDIS_PORT = 6380
STOP_TIMEOUT_S = 30.0


def redis_url_configured(config_file: str | None) -> bool:
    """Whether the user chose a Redis: ``CRYPTOCAST_REDIS_URL`` set, or ``redis_url`` in the
    TOML file. The settings model's default URL is not a choice."""
    return user_chose("redis_url", config_file)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_private_redis(settings: Settings) -> RedisServer:
    """The private ``redis-server`` of ``up`` (AOF on, data under ``<data_dir>/redis``)."""
    port = PRIVATE_REDIS_PORT if _port_free(PRIVATE_REDIS_PORT) else free_port()
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    server = RedisServer(settings.data_dir / "redis", port=port, password=password)
    server.start()
    return server


def service_envs(settings: Settings, redis_url: str | None) -> tuple[dict[str, str], ...]:
    """Environments of the ingest and forecast children: ours, plus the private Redis URL and
    one metrics port each."""
    base = dict(os.environ)
    if redis_url is not None:
        base[ENV_PREFIX + "REDIS_URL"] = redis_url
    ingest, forecast = dict(base), dict(base)
    if settings.metrics_port:
        ingest[ENV_PREFIX + "METRICS_PORT"] = str(settings.metrics_port)
        forecast[ENV_PREFIX + "METRICS_PORT"] = str(settings.metrics_port + 1)
    return ingest, forecast


def supervise(services: list[ChildService], poll_s: float = 0.2) -> int:
    """Run until SIGTERM/SIGINT (exit code 0) or until a service dies (1); stop them all."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    died: ChildService | None = None
    try:
        while not received:
            died = next((s for s in services if s.poll() is not None), None)
            if died is not None:
                log.error("up.service_exited", service=died.command, exit_code=died.poll())
                break
            time.sleep(poll_s)
        if received:
            log.info("up.stopping", signal=signal.Signals(received[0]).name)
        codes = stop_all(services, STOP_TIMEOUT_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("up.stopped", exit_codes=codes)
    if died is not None or any(c != 0 for c in codes.values()):
        return 1
    return 0


@app.command()
def up(ctx: typer.Context) -> None:
    """Ingest + forecaster on this machine (a private redis-server when no Redis URL is set).

    Without CRYPTOCAST_REDIS_URL (env or TOML) a redis-server is started on 127.0.0.1 with its
    data and AOF under <data_dir>/redis. SIGTERM or Ctrl-C stops everything cleanly.
    """
    state: AppState = ctx.obj
    settings = state.settings()
    server: RedisServer | None = None
    if not redis_url_configured(state.config_file):
        try:
            server = start_private_redis(settings)
        except RuntimeError as e:
            fail(str(e).splitlines()[0], code=3)
        log.info(
            "up.redis_started",
            port=server.port,
            data_dir=str(server.data_dir),
            hint="set CRYPTOCAST_REDIS_URL to use your own Redis",
        )
    redis_url = None if server is None else f"redis://127.0.0.1:{server.port}/0"
    ingest_env, forecast_env = service_envs(settings, redis_url)
    services = [
        ChildService("ingest", ingest_env, config_file=state.config_file),
        ChildService("forecast", forecast_env, config_file=state.config_file),
    ]
    try:
        for s in services:
            s.start()
        log.info("up.started", series=settings.series, redis=redis_url or settings.redis_url_masked)
        me = Instance(
            owner="up",
            pid=os.getpid(),
            redis_url=redis_url or settings.redis_url.get_secret_value(),
            series=list(settings.series),
            clock=settings.clock,
            key_prefix=settings.key_prefix,
        )
        with announced(settings.data_dir, me):
            code = supervise(services)
    finally:
        stop_all(services, STOP_TIMEOUT_S)  # no-op when supervise already stopped them
        if server is not None:
            server.stop()
            log.info("up.redis_stopped", port=server.port)
    raise typer.Exit(code)
