"""Where a running ``cryptocast up`` or ``demo`` is, for the commands of a second terminal.

``up`` and ``demo`` start their own ``redis-server`` (6380 or a free port) and configure their
services through the environment of the children, so a ``cryptocast status`` typed in another
terminal would otherwise query the default Redis URL (on Debian, the system Redis on 6379) and
report "no candles" about an unrelated database. While they run, they announce themselves in
``<data_dir>/instance.json``: the Redis URL, the series, the clock and the key prefix. The
reading commands (``status``, ``watch``, ``web``) use it for every one of those settings the user
did not set (environment or TOML file), and say which Redis they queried.

The file is written with mode 0600 (the URL may carry a password), removed when its owner stops,
and ignored when its process is gone (a ``kill -9`` leaves it behind).
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from config.settings import ENV_PREFIX, mask_url

FILE_NAME = "instance.json"
# The settings an instance supplies to a reader that did not choose them itself.
SUPPLIED = ("redis_url", "series", "clock", "key_prefix")


@dataclass(frozen=True)
class Instance:
    """A running ``up`` or ``demo``: what its services were configured with."""

    owner: str
    pid: int
    redis_url: str
    series: list[str]
    clock: str
    key_prefix: str

    def describe(self) -> str:
        """``redis://127.0.0.1:6380/0 (cryptocast demo, pid 1234)``, password masked."""
        return f"{mask_url(self.redis_url)} (cryptocast {self.owner}, pid {self.pid})"


def instance_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_instance(data_dir: Path) -> Instance | None:
    """The instance announced under ``data_dir``; None if none, unreadable or its process gone."""
    try:
        raw = orjson.loads(instance_path(data_dir).read_bytes())
        inst = Instance(**{k: raw[k] for k in Instance.__dataclass_fields__})
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return inst if _alive(inst.pid) else None


@contextlib.contextmanager
def announced(data_dir: Path, instance: Instance) -> Iterator[Path]:
    """Announce ``instance`` while the block runs; remove the file after (if still ours)."""
    path = instance_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(asdict(instance), option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    try:
        yield path
    finally:
        current = read_instance(data_dir)
        if current is None or current.pid == instance.pid:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def user_chose(name: str, config_file: str | None) -> bool:
    """Whether the user set setting ``name`` (``CRYPTOCAST_<NAME>`` or a key of the TOML file).

    The settings model's defaults are not a choice."""
    if os.environ.get(ENV_PREFIX + name.upper()):
        return True
    path = config_file or os.environ.get(ENV_PREFIX + "CONFIG")
    if not path:
        return False
    try:
        with Path(path).open("rb") as f:
            return name in tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_settings reports a bad file itself


def instance_overrides(
    data_dir: Path, config_file: str | None, explicit: dict[str, Any]
) -> tuple[dict[str, Any], Instance | None]:
    """Settings a reading command takes from a running instance: those neither given on its
    command line (``explicit``) nor chosen by the user. Returns them and the instance."""
    inst = read_instance(data_dir)
    if inst is None:
        return {}, None
    taken = {
        name: getattr(inst, name)
        for name in SUPPLIED
        if name not in explicit and not user_chose(name, config_file)
    }
    return taken, (inst if "redis_url" in taken else None)
