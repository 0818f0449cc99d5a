"""A trading-bot skeleton that follows cryptocast's predictions with nothing but redis-py.

It subscribes to each series' pub/sub channel for speed and, every time it (re)connects, first
reads the prediction stream of the same name from the last ``id`` it handled, so a disconnect,
a restart (``--state FILE`` keeps the ids) or a Redis failover loses no prediction. A message can
then arrive twice (from the catch-up read and from the channel): ids only grow, so anything at
or below the last id handled is skipped.

    python examples/bot.py --redis redis://:PASSWORD@127.0.0.1:6379/0 \
        --series binance:BTC/USDT:1m --series binance:ETH/USDT:1m --state bot-state.json

Replace ``on_prediction`` with your strategy. The one here sizes a position by the predicted
volatility (schema 2's ``sigma``, the standard deviation of the next log return): it risks
``--risk`` of equity per one-sigma move (``size = risk / sigma``, capped at ``--max-size``), so
it trades smaller when the market is wild and larger when it is calm, and takes the side
``p_up`` favours by more than ``--edge``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis


def stream_key(prefix: str, series: str) -> str:
    """Channel and stream name: the series in braces is its Redis Cluster hash tag."""
    return f"{prefix}:predictions:{{{series}}}"


def id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


RISK = 0.005  # equity lost by a one-sigma move against the position
MAX_SIZE = 1.0  # position as a fraction of equity (1.0: no leverage)
EDGE = 0.02  # trade only when p_up is this far from a coin flip


def sigma_of(p: dict[str, Any]) -> float:
    """The predicted standard deviation of the next log return; from the interval for schema 1
    messages, which have no ``sigma`` (a 90 % normal interval is 2 x 1.645 sigma wide)."""
    if p.get("sigma"):
        return float(p["sigma"])
    return math.log(p["upper"] / p["lower"]) / (2 * 1.6449)


def position_size(p: dict[str, Any], risk: float = RISK, max_size: float = MAX_SIZE) -> float:
    """Signed fraction of equity to hold: volatility-targeted size on the side ``p_up`` favours."""
    p_up = p.get("p_up")
    if p_up is None or abs(p_up - 0.5) <= EDGE:
        return 0.0
    size = min(risk / max(sigma_of(p), 1e-12), max_size)
    return size if p_up > 0.5 else -size


def on_prediction(p: dict[str, Any]) -> None:
    """Your strategy goes here. ``p`` is a Prediction message (see the README)."""
    move = (p["predicted_close"] / p["last_close"] - 1) * 100
    p_up = p.get("p_up")
    print(
        f"{p['exchange']}:{p['symbol']}:{p['timeframe']} id={p['id']} as_of={p['as_of']} "
        f"last={p['last_close']} predicted={p['predicted_close']:.6g} ({move:+.3f}%) "
        f"[{p['lower']:.6g}, {p['upper']:.6g}] sigma={sigma_of(p):.3g} "
        f"p_up={'-' if p_up is None else f'{p_up:.3f}'} size={position_size(p):+.3f} "
        f"model={p['model'].get('kind', 'lstm')}/{p['model']['version']}"
        + (" STALE MODEL" if p["stale_model"] else ""),
        flush=True,
    )


class Bot:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.r = redis.Redis.from_url(args.redis, health_check_interval=30)
        self.keys = {stream_key(args.prefix, s): s for s in args.series}
        self.state_file: Path | None = args.state
        self.last: dict[str, str] = {}
        if self.state_file is not None and self.state_file.exists():
            self.last = json.loads(self.state_file.read_text())
        if args.since:
            self.last = {s: args.since for s in args.series}
        self.handled = 0

    def handle(self, series: str, raw: bytes | str) -> None:
        p = json.loads(raw)
        last = self.last.get(series)
        if last is not None and id_tuple(p["id"]) <= id_tuple(last):
            return  # already handled (catch-up and channel overlap)
        on_prediction(p)
        self.last[series] = p["id"]
        if self.state_file is not None:
            self.state_file.write_text(json.dumps(self.last))
        self.handled += 1
        if self.args.count and self.handled >= self.args.count:
            raise SystemExit(0)

    def catch_up(self) -> None:
        for key, series in self.keys.items():
            last = self.last.get(series)
            if last is None:
                # First run: start from the newest prediction instead of the whole history.
                entries = self.r.xrevrange(key, "+", "-", count=1)
            else:
                entries = self.r.xrange(key, f"({last}", "+")
            for _id, fields in entries:
                self.handle(series, fields[b"m"])

    def run(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                # Subscribe before catching up, so nothing falls between the two.
                pubsub.subscribe(*self.keys)
                self.catch_up()
                backoff = 0.5
                for msg in pubsub.listen():
                    if msg["type"] == "message":
                        self.handle(self.keys[msg["channel"].decode()], msg["data"])
            except redis.ConnectionError as e:
                print(
                    f"redis connection lost ({e}); reconnecting in {backoff:.1f}s", file=sys.stderr
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                pubsub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Follow cryptocast predictions.")
    parser.add_argument(
        "--redis",
        default=os.environ.get("CRYPTOCAST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis URL (password inside: redis://:PASSWORD@host:6379/0)",
    )
    parser.add_argument("--series", action="append", required=True, help="Series (repeatable)")
    parser.add_argument("--prefix", default="cryptocast", help="CRYPTOCAST_KEY_PREFIX")
    parser.add_argument("--since", help="Resume after this prediction id (e.g. 1769904000000-0)")
    parser.add_argument("--state", type=Path, help="File keeping the last id per series")
    parser.add_argument("--count", type=int, default=0, help="Exit after N predictions (0: never)")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: just stop
        Bot(parser.parse_args()).run()


if __name__ == "__main__":
    main()
