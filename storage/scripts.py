"""The Lua scripts in ``storage/lua`` and how the batch writes send them."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

__all__ = ["PipelinedScript", "load_script"]


def load_script(name: str) -> str:
    """The source of ``storage/lua/<name>``."""
    return resources.files("storage").joinpath("lua", name).read_text()


class PipelinedScript:
    """A Lua script run as many EVALSHA calls in one pipeline (concurrent calls on a Cluster).

    EVALSHA goes straight into the pipeline: redis-py's script objects would first ask SCRIPT
    EXISTS on every execute, a second round trip on the ingest path. The script is loaded on
    first use and again if Redis lost it (a restart), so the calls must be safe to repeat.
    """

    def __init__(self, redis: Any, source: str) -> None:
        self.redis = redis
        self._script = redis.register_script(source)
        self._loaded = False

    async def run(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """The script's result for each ``(keys, argv)`` of ``calls``, in order."""
        sha = self._script.sha
        for attempt in (1, 2):
            if not self._loaded:
                await self.redis.script_load(self._script.script)
                self._loaded = True
            try:
                if isinstance(self.redis, RedisCluster):
                    # redis-py's cluster pipeline refuses EVALSHA: one call per script, sent
                    # concurrently (each still touches a single slot).
                    return list(
                        await asyncio.gather(
                            *(
                                self.redis.evalsha(sha, len(keys), *keys, *argv)
                                for keys, argv in calls
                            )
                        )
                    )
                pipe = self.redis.pipeline(transaction=False)
                for keys, argv in calls:
                    pipe.evalsha(sha, len(keys), *keys, *argv)
                return list(await pipe.execute())
            except NoScriptError:
                self._loaded = False
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
