"""``cryptocast web``: the dashboard and the read-only HTTP/WebSocket API (compose `web`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import structlog
import typer

from config.settings import Settings, SettingsError
from core.lifecycle import on_signals
from cryptocast.app import app
from cryptocast.runtime import AppState, fail, run

log = structlog.get_logger(__name__)


@app.command()
def web(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default CRYPTOCAST_WEB__HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default CRYPTOCAST_WEB__PORT, 8080).")
    ] = None,
) -> None:
    """Serve the live dashboard and the read-only API until SIGTERM (the compose `web` service).

    Binding beyond localhost needs CRYPTOCAST_WEB__TOKEN (clients send it as a bearer token).
    """
    from web.app import check_exposure

    state: AppState = ctx.obj
    settings = state.reader_settings()
    bind_host = host if host is not None else settings.web.host
    bind_port = port if port is not None else settings.web.port
    if not 1 <= bind_port <= 65535:
        fail(f"--port must be 1..65535 (got {bind_port})")
    try:
        check_exposure(bind_host, settings)
    except SettingsError as e:
        fail(str(e))
    log.info("web.redis", redis=state.queried(settings))
    run(lambda: serve_web(settings, bind_host, bind_port))


async def serve_web(settings: Settings, host: str, port: int) -> None:
    """Run the web app under uvicorn until SIGTERM/SIGINT, then shut down gracefully."""
    import uvicorn

    from storage.client import close_quietly, connect
    from web.app import create_app

    redis = await connect(settings)

    class _Server(uvicorn.Server):
        # uvicorn re-raises a caught SIGTERM after its graceful shutdown, which would end the
        # process with a signal status; we stop on it and exit 0 like the other services.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        create_app(settings, redis),
        host=host,
        port=port,
        log_config=None,  # keep our structlog set-up
        access_log=False,  # URLs may carry ?token=; never log them
        lifespan="on",
        timeout_graceful_shutdown=5,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
    server = _Server(config)

    def stop() -> None:
        server.should_exit = True

    log.info("web.serving", host=host, port=port, auth=settings.web.token is not None)
    try:
        with on_signals(stop):
            await server.serve()
        if not server.started:
            raise ValueError(f"cannot serve on {host}:{port} (is the port in use?)")
    finally:
        await close_quietly(redis)
