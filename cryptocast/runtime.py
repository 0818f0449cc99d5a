"""Plumbing shared by the commands: settings, logging, Redis, and clean failure."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import typer

from config.logging import configure_logging
from config.settings import Settings, SettingsError, load_settings
from cryptocast.instance import Instance, instance_overrides
from storage.client import RedisUnavailable, connect
from storage.facade import Storage

T = TypeVar("T")


@dataclass
class AppState:
    """What the global options decided, handed to every command."""

    config_file: str | None = None
    _settings: Settings | None = None
    # The running `up`/`demo` whose Redis a reading command queries (see cryptocast.instance).
    instance: Instance | None = None

    def settings(self, **overrides: Any) -> Settings:
        if self._settings is None or overrides:
            self._settings = load_settings(self.config_file, **overrides)
            configure_logging(self._settings.log_format, self._settings.log_level)
        return self._settings

    def reader_settings(self, **overrides: Any) -> Settings:
        """Settings of a command that only reads (status, watch, web): what the user did not set
        comes from a running ``cryptocast up`` or ``demo`` when one is announced."""
        base = self.settings(**overrides)
        taken, self.instance = instance_overrides(base.data_dir, self.config_file, overrides)
        return self.settings(**overrides, **taken) if taken else base

    def queried(self, settings: Settings) -> str:
        """Which Redis a reading command queried, for its output."""
        if self.instance is not None:
            return self.instance.describe()
        return settings.redis_url_masked


class SourceUnavailable(RuntimeError):
    """An exchange or data provider could not be reached or refused; reported as one line."""


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: no traceback for problems the user can fix."""
    typer.echo(f"cryptocast: error: {message}", err=True)
    raise typer.Exit(code)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command, turning configuration and connection problems into one line."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except SettingsError as e:
        fail(str(e))
    except RedisUnavailable as e:
        fail(str(e), code=3)
    except SourceUnavailable as e:
        fail(str(e), code=4)
    except (ValueError, FileNotFoundError) as e:  # bad arguments, unreadable input files
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        sys.exit(130)


async def open_storage(settings: Settings) -> Storage:
    """Connect to Redis (one-line error when unreachable) and build the process's storage."""
    return Storage.from_settings(await connect(settings), settings)
