"""Batched inference across series: many models' forward passes in one set of numpy calls.

When candles of several series close at the same instant, each series' model runs at batch
size 1, where the cost of :class:`~forecaster.inference.NumpyLSTM` is numpy's per-call
overhead, not arithmetic. Models of the same shape (units, layers, features, window) are
stacked: their block matrices become one ``(S, D, 4W)`` array and every step is one batched
``matmul`` plus the same handful of elementwise calls, so ten series cost little more than one.
Series served by the same model object (a global model shared by every series of a timeframe)
need no stacking: their windows are one batch through the one set of weights, and their
forecasts are built together (:meth:`~forecaster.inference.LoadedModel.finish_many`).

:class:`InferenceBatcher` collects the predictions requested within one turn of the event loop
(no waiting: what arrived together is batched, a lone request runs at once) and runs them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecaster.data import CandleArrays
from forecaster.heads import Forecast
from forecaster.inference import LoadedModel, NumpyLSTM, wavefront

# Stacking pays while the stacked weights stay in cache: measured on the 2-core development
# machine, 10 default-size models cost 3.3 ms stacked vs 6.6 ms one by one, 100 cost 82 vs 45.
MAX_STACK = 16
# Windows per pass of one shared model: the weights are read once per step whatever the batch,
# so the batch is bounded only to keep the state buffers small.
MAX_SHARED = 4096


def forward_many(
    nets: list[NumpyLSTM],
    xs: list[np.ndarray],
    blocks: np.ndarray | None = None,
) -> np.ndarray:
    """Raw outputs of ``nets[i](xs[i])`` for single windows ``xs[i]`` of shape (1, T, F):
    ``(S,)`` for Dense(1) heads, else ``(S, k)``.

    All nets must share units, layers, feature count, outputs and dtype, and all windows their
    length.
    ``blocks`` may pass the stacked block matrices (``stack_blocks(nets)``) to skip the copy.
    """
    first = nets[0]
    x = np.stack([np.asarray(v, dtype=first.dtype) for v in xs])  # (S, 1, T, F)
    if blocks is None:
        blocks = stack_blocks(nets)
    h = wavefront(blocks, x, first.units, first.n_layers)  # (S, 1, U)
    dense_w = np.stack([n.dense_w for n in nets])  # (S, U, k)
    dense_b = np.stack([n.dense_b for n in nets])  # (S, k)
    out = (np.matmul(h, dense_w)[:, 0, :] + dense_b).astype(np.float64)
    return out[:, 0] if first.n_out == 1 else out


@dataclass(slots=True)
class _Request:
    model: LoadedModel
    recent: CandleArrays  # checked; turned into the model's input when the batch runs
    level: float | None
    fut: asyncio.Future[Forecast]


def stack_blocks(nets: list[NumpyLSTM]) -> np.ndarray:
    return np.stack([n.block for n in nets])


def _shape_key(model: LoadedModel) -> tuple[Any, ...]:
    net = model.net
    dtype = np.dtype(net.dtype).str
    return (net.units, net.n_layers, net.n_features, net.n_out, dtype, model.window)


class InferenceBatcher:
    """Batches the forecasts requested in one event-loop turn (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: list[_Request] = []
        self._scheduled = False
        self._stacked: dict[tuple[int, ...], tuple[tuple[NumpyLSTM, ...], np.ndarray]] = {}
        self.batches = 0
        self.batched = 0

    async def forecast(
        self, model: LoadedModel, recent: CandleArrays, level: float | None = None
    ) -> Forecast:
        """The model's forecast after ``recent``, interval at ``level`` (batched, see above)."""
        model.check(recent)  # a window the model cannot read fails here, alone
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Forecast] = loop.create_future()
        self._queue.append(_Request(model, recent, level, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        queue, self._queue, self._scheduled = self._queue, [], False
        # Requests of one set of weights (the global model, shared by every series of a
        # timeframe) are one pass over a batch of windows; the rest (per-series models) are
        # stacked by shape. Weights are identified by their object: the queue holds every
        # request's model alive, so an ``id`` cannot be reused within one flush.
        by_net: dict[int, list[_Request]] = defaultdict(list)
        for req in queue:
            by_net[id(req.model.net)].append(req)
        groups: dict[tuple[Any, ...], list[_Request]] = defaultdict(list)
        for reqs in by_net.values():
            if len(reqs) > 1:
                for i in range(0, len(reqs), MAX_SHARED):
                    self._run_shared(reqs[i : i + MAX_SHARED])
            else:
                groups[_shape_key(reqs[0].model)].append(reqs[0])
        for members in groups.values():
            for i in range(0, len(members), MAX_STACK):
                self._run_stacked(members[i : i + MAX_STACK])
        self.batched += len(queue)

    def _run_shared(self, items: list[_Request]) -> None:
        """One forward pass of one set of weights over the windows of ``items`` (S=1, B=N)."""
        self.batches += 1
        # Inputs and forecasts are built per model (metadata: scaler, head), together.
        by_model: dict[int, list[_Request]] = defaultdict(list)
        for r in items:
            by_model[id(r.model)].append(r)
        parts = list(by_model.values())
        try:
            prepared = [p[0].model.prepare_many([r.recent for r in p]) for p in parts]
            raw = items[0].model.net(np.concatenate([x for x, _last, _sigma in prepared]))
        except Exception as e:  # a broken model fails its own requests, not the loop
            _fail(items, e)
            return
        start = 0
        for part, (_x, lasts, sigmas) in zip(parts, prepared, strict=True):
            rows, start = raw[start : start + len(part)], start + len(part)
            try:
                got = part[0].model.finish_many(
                    rows,
                    lasts,
                    sigmas,
                    np.array([np.nan if r.level is None else r.level for r in part]),
                )
            except Exception as e:
                _fail(part, e)
                continue
            for r, g in zip(part, got, strict=True):
                if r.fut.done():
                    continue
                if isinstance(g, Forecast):
                    r.fut.set_result(g)
                else:
                    r.fut.set_exception(g)

    def _run_stacked(self, items: list[_Request]) -> None:
        """Different models of one shape, one window each, stacked (see the module docstring)."""
        self.batches += 1
        try:
            prepared = [r.model.prepare(r.recent) for r in items]
            nets = [r.model.net for r in items]
            out = forward_many(nets, [x for x, _l, _s in prepared], self._blocks(nets))
        except Exception as e:  # a broken model fails its own requests, not the loop
            _fail(items, e)
            return
        for r, raw, (_x, last, sigma) in zip(items, out, prepared, strict=True):
            if r.fut.done():
                continue
            try:
                r.fut.set_result(r.model.finish(raw, last, sigma, r.level))
            except Exception as e:  # e.g. a non-finite output: that request only
                r.fut.set_exception(e)

    def _blocks(self, nets: list[NumpyLSTM]) -> np.ndarray:
        """The stacked block matrices of ``nets``, cached while the same nets come together.

        The cache entry keeps its nets alive and is checked against them: keyed by ``id`` alone,
        a model freed after a swap could hand its address (and so its stale weights) to the next
        version loaded.
        """
        key = tuple(id(n) for n in nets)
        cached = self._stacked.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], nets, strict=True)):
            return cached[1]
        if len(self._stacked) > 64:  # models came and went: drop old stacks
            self._stacked.clear()
        blocks = stack_blocks(nets)
        self._stacked[key] = (tuple(nets), blocks)
        return blocks


def _fail(items: list[_Request], e: Exception) -> None:
    for r in items:
        if not r.fut.done():
            r.fut.set_exception(e)
