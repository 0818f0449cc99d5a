"""What the compose Redis holds, read over the compose network from inside a cryptocast container.

``docker compose exec -T web python - < tests/deploy/probe.py`` prints one JSON object: per
configured series its stored candles, holes, published predictions and pending events, plus
whether Redis refuses a client without the password. It uses the image's own settings (the
container's environment) and storage layer, so it sees exactly what the services see.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError

from config.settings import load_settings
from storage.client import close_quietly, connect
from storage.facade import Storage


async def anonymous_refused(url: str) -> bool:
    """True when a client without the password gets NOAUTH (Redis requires the password)."""
    client = Redis.from_url(url)
    try:
        await client.ping()
    except AuthenticationError:  # redis-py's reading of NOAUTH
        return True
    except ResponseError as e:
        return "NOAUTH" in str(e)
    finally:
        await client.aclose()
    return False


async def main() -> dict[str, Any]:
    settings = load_settings()
    redis = await connect(settings)
    try:
        storage = Storage.from_settings(redis, settings)
        store, bus, events = storage.candles, storage.predictions, storage.events
        out: dict[str, Any] = {"series": {}}
        for s in settings.series_ids:
            candles = await store.range(s)
            predictions = await bus.since(s, count=100_000)
            out["series"][s.key] = {
                "candles": [c.to_dict() for c in candles],
                "holes": [h.to_dict() for h in await store.holes(s)],
                "predictions": [
                    {"as_of": p.as_of, "target_time": p.target_time, "version": p.model.version}
                    for p in predictions
                ],
                "pending_events": await events.pending_count(s),
            }
        out["appendonly"] = (await redis.config_get("appendonly")).get("appendonly")
        # compose passes the password apart from the URL, so the URL alone is anonymous
        out["anonymous_refused"] = await anonymous_refused(settings.redis_url.get_secret_value())
        return out
    finally:
        await close_quietly(redis)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
