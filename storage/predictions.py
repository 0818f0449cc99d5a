"""Prediction publishing: pub/sub channel + capped stream + latest key, in one atomic step.

Bots subscribe to the channel ``{prefix}:predictions:{series}`` for speed and read the stream of
the same name to catch up from the ``id`` they last saw.

On a standalone Redis the publishes requested in one turn of the event loop (the series whose
candles closed together) go out as one pipeline of scripts: one round trip, each script still
atomic on its own. On a Cluster each is sent alone (the series live on different nodes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from core.schemas import Prediction, stream_id_for
from core.series import SeriesId
from storage.events import DEFAULT_GROUP
from storage.keys import Keys
from storage.scripts import load_script


class PredictionBus:
    """Writes and reads published predictions."""

    def __init__(self, redis: Any, keys: Keys, stream_len: int = 10_000) -> None:
        self.redis = redis
        self.keys = keys
        self.stream_len = stream_len
        self._publish = redis.register_script(load_script("publish_prediction.lua"))
        self.pipelined = not isinstance(redis, RedisCluster)
        self._queue: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._script_keys: dict[tuple[str, str, str], list[str]] = {}

    async def publish(
        self,
        prediction: Prediction,
        *,
        ack: Sequence[str] = (),
        group: str = DEFAULT_GROUP,
        scores: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
    ) -> bool:
        """Publish once; returns False (and publishes nothing) for a repeat or older ``as_of``.

        In the same atomic step, acknowledge the closed-candle events ``ack`` (of ``group``) the
        prediction answers, write ``scores`` to the live-score hash (see storage.scores) and,
        when the message is published, ``calibration`` as the series' calibration state (see
        storage.calibration).
        """
        if prediction.id != stream_id_for(prediction.as_of):
            raise ValueError(f"prediction id {prediction.id!r} must be '<as_of>-0'")
        keys = self._keys_of(prediction)
        key = keys[0]
        args: list[Any] = [
            key,
            prediction.id,
            prediction.to_json(),
            self.stream_len,
            group,
            orjson.dumps(calibration) if calibration is not None else b"",
            len(ack),
            *ack,
        ]
        if scores:
            pairs = [x for f, v in scores.items() for x in (f, orjson.dumps(v).decode())]
            args.append(orjson.dumps(pairs))
        if not self.pipelined:
            return bool(await self._publish(keys=keys, args=args))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, fut))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return bool(await fut)

    def _keys_of(self, prediction: Prediction) -> list[str]:
        """The publish script's keys for the prediction's series (built once per series)."""
        name = (prediction.exchange, prediction.symbol, prediction.timeframe)
        keys = self._script_keys.get(name)
        if keys is None:
            series = prediction.series
            keys = self._script_keys[name] = [
                self.keys.predictions(series),
                self.keys.latest_prediction(series),
                self.keys.events(series),
                self.keys.live_score(series),
                self.keys.calibration(series),
            ]
        return keys

    def _flush(self) -> None:
        # A task, not the first caller: a publisher cancelled meanwhile must not strand the
        # others' scripts (its own script still runs, as it would have alone).
        calls, self._queue = self._queue, []
        task = asyncio.create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            if len(calls) == 1:
                keys, args, _fut = calls[0]
                results: list[Any] = [await self._publish(keys=keys, args=args)]
            else:
                pipe = self.redis.pipeline(transaction=False)
                for keys, args, _fut in calls:
                    pipe.evalsha(self._publish.sha, len(keys), *keys, *args)
                results = list(await pipe.execute(raise_on_error=False))
                for i, res in enumerate(results):
                    if isinstance(res, NoScriptError):  # not run at all: safe to run again
                        keys, args, _fut = calls[i]
                        results[i] = await self._publish(keys=keys, args=args)
        except BaseException as e:
            for _keys, _args, fut in calls:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            if not isinstance(e, Exception):
                raise
            return
        for (_keys, _args, fut), res in zip(calls, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def latest(self, series: SeriesId) -> Prediction | None:
        raw = await self.redis.get(self.keys.latest_prediction(series))
        return None if raw is None else Prediction.from_json(raw)

    async def since(
        self, series: SeriesId, after_id: str | None = None, count: int = 1000
    ) -> list[Prediction]:
        """Predictions after the stream id ``after_id`` (exclusive), oldest first."""
        start = "-" if after_id is None else "(" + after_id
        entries = await self.redis.xrange(self.keys.predictions(series), start, "+", count=count)
        return [Prediction.from_json(fields[b"m"]) for _id, fields in entries]

    async def recent(self, series: SeriesId, count: int = 100) -> list[Prediction]:
        """The newest ``count`` predictions in the stream, oldest first."""
        entries = await self.redis.xrevrange(self.keys.predictions(series), "+", "-", count=count)
        return [Prediction.from_json(fields[b"m"]) for _id, fields in reversed(entries)]

    async def count(self, series: SeriesId) -> int:
        return int(await self.redis.xlen(self.keys.predictions(series)))

    async def subscribe(self, series: list[SeriesId]) -> AsyncIterator[Prediction]:
        """Yield predictions published on the channels of ``series`` from now on."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(*(self.keys.predictions(s) for s in series))
        try:
            async for msg in pubsub.listen():
                if msg.get("type") == "message":
                    yield Prediction.from_json(msg["data"])
        finally:
            await pubsub.aclose()
