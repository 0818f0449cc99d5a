"""What ``cryptocast demo`` tells its user as it runs: a line, stamped with the seconds since the
start, when history is stored, when a training starts and ends, and for every prediction."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from core.schemas import Prediction
from core.series import SeriesId, model_subject
from storage.facade import Storage

__all__ = ["Narrator"]


class Narrator:
    """The demo's running commentary on ``console``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started_at = time.monotonic()
        self._header_shown = False

    async def follow(
        self, storage: Storage, series: list[SeriesId], history: int, speed: float, scope: str
    ) -> None:
        """Say what ingest and training do, as a user would want to know, once each (until
        cancelled); ``history`` candles are expected before live ones, at ``speed`` x; the
        models trained are those of ``scope`` (one per timeframe, or one per series)."""
        store, tlog, leases = storage.candles, storage.training_log, storage.leases
        history_told: set[str] = set()
        training: set[str] = set()
        finished: dict[str, Any] = {}
        subjects = list(dict.fromkeys(model_subject(s, scope) for s in series))
        while True:
            for s in series:
                count = await store.count(s)
                if s.key not in history_told and count >= history - 1:
                    history_told.add(s.key)
                    self.say(
                        f"[cyan]ingest[/cyan]   {s.symbol}: {count:,} candles of history stored; "
                        f"a live candle closes every {60 / speed:.1f}s"
                    )
            for s in subjects:
                key = s.key
                name = f"the {s.timeframe} model of every series" if s.is_global else s.symbol
                if await leases.holder(s, "train") is not None:
                    if key not in training:
                        training.add(key)
                        self.say(f"[magenta]training[/magenta] {name}: started")
                else:
                    training.discard(key)
                state = await tlog.state(s)
                if state.get("finished_at") and finished.get(key) != state["finished_at"]:
                    finished[key] = state["finished_at"]
                    self.say(self._training_line(name, state))
            await asyncio.sleep(0.5)

    def _training_line(self, name: str, state: dict[str, Any]) -> str:
        outcome = state.get("outcome")
        version, skill = state.get("version"), state.get("skill")
        took = state.get("duration_s")
        skill_text = "" if skill is None else f", holdout skill vs naive {skill:+.2%}"
        if outcome == "promoted":
            return (
                f"[magenta]training[/magenta] {name}: model {version} [green]promoted[/green] "
                f"(trained in {took}s{skill_text})"
            )
        if outcome == "kept_current":
            return (
                f"[magenta]training[/magenta] {name}: model {version} not better than the "
                f"serving one on the same holdout, kept the current model{skill_text}"
            )
        return f"[magenta]training[/magenta] {name}: {outcome} {state.get('error', '')}"

    def say(self, text: str) -> None:
        """One line, after the seconds since the demo started."""
        elapsed = time.monotonic() - self.started_at
        self.console.print(f"[dim]{elapsed:6.1f}s[/dim] {text}")

    def prediction(self, p: Prediction) -> None:
        """One line per published prediction (a header line before the first)."""
        if not self._header_shown:
            self._header_shown = True
            self.console.print(
                "[dim] elapsed series    as of   last close → predicted close      "
                f"{p.interval_level:.0%} interval        model        latency[/dim]"
            )
        up = p.predicted_close >= p.last_close
        arrow = "[green]▲[/green]" if up else "[red]▼[/red]"
        change = (p.predicted_close / p.last_close - 1) * 100
        as_of = datetime.fromtimestamp(p.as_of / 1000, UTC).strftime("%H:%M")
        self.say(
            f"[bold]{p.symbol:<9}[/bold] {as_of}  {p.last_close:>10.4f} → {arrow}"
            f"{p.predicted_close:>10.4f} {change:+.3f}%  [{p.lower:.4f}, {p.upper:.4f}]  "
            f"{p.model.version}  {p.latency_ms:5.1f} ms"
            + ("  [yellow]stale model[/yellow]" if p.stale_model else "")
        )
