"""``/api/series``: the configured series, their candles, predictions and forecasts."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query

from core.schemas import Prediction
from web.context import Context, Series, require_token
from web.forecast import DEFAULT_STEPS, MAX_STEPS, BeyondPath, ForecastUnavailable
from web.models import CandleOut, CandlePage, ForecastOut, PredictionPage, SeriesOut

MAX_LIMIT = 5000
STREAM_ID = r"^\d{1,15}(-\d{1,15})?$"

router = APIRouter(prefix="/api/series", dependencies=[Depends(require_token)])


@router.get("", tags=["series"])
async def list_series(ctx: Context) -> list[SeriesOut]:
    """The configured series."""
    return [
        SeriesOut(
            series=s.key,
            exchange=s.exchange,
            symbol=s.symbol,
            timeframe=s.timeframe.text,
            path=quote(s.key, safe=":"),
        )
        for s in ctx.configured.values()
    ]


@router.get("/{series:path}/candles", tags=["series"])
async def candles(
    ctx: Context,
    series: Series,
    since: Annotated[
        int | None,
        Query(ge=0, description="First open time (UTC ms); default: the newest `limit`"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
) -> CandlePage:
    """Closed candles, oldest first: the newest ``limit``, or ``limit`` candle slots from
    ``since`` (fewer items where the history has holes; follow ``next_since``)."""
    tf, store = series.timeframe, ctx.storage.candles
    last = await store.last_open_time(series)
    if since is None:
        rows = await store.last(series, limit)
        nxt = None
    else:
        first = tf.floor_index(since) + (0 if tf.is_aligned(since) else 1)
        end = tf.open_time(first + limit - 1)
        rows = await store.range(series, tf.open_time(first), end)
        nxt = tf.open_time(first + limit) if last is not None and end < last else None
    return CandlePage(
        series=series.key,
        candles=[CandleOut.model_validate(c.to_dict()) for c in rows],
        next_since=nxt,
    )


@router.get("/{series:path}/predictions", tags=["predictions"])
async def predictions(
    ctx: Context,
    series: Series,
    since: Annotated[
        str | None,
        Query(
            pattern=STREAM_ID,
            description="Stream id (or as_of ms) to read after, exclusive; default: the newest "
            "`limit`",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
) -> PredictionPage:
    """Published predictions from the prediction stream, oldest first."""
    if since is None:
        items = await ctx.storage.predictions.recent(series, limit)
        nxt = None
    else:
        items = await ctx.storage.predictions.since(series, since, count=limit)
        nxt = items[-1].id if len(items) == limit else None
    return PredictionPage(series=series.key, predictions=items, next_since=nxt)


@router.get(
    "/{series:path}/latest",
    tags=["predictions"],
    responses={404: {"description": "Unknown series, or nothing published yet"}},
)
async def latest(ctx: Context, series: Series) -> Prediction:
    """The latest Prediction message of the series."""
    p = await ctx.storage.predictions.latest(series)
    if p is None:
        raise HTTPException(404, f"no prediction published for {series.key} yet")
    return p


@router.get(
    "/{series:path}/forecast",
    tags=["predictions"],
    responses={
        409: {"description": "No forecast stored yet (no model promoted, or no candle since)"},
        422: {"description": "steps or until outside the stored path"},
    },
)
async def forecast(
    ctx: Context,
    series: Series,
    steps: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_STEPS,
            description=f"Candles ahead (default {DEFAULT_STEPS}; at most the forecaster's "
            "forecast.path_steps)",
        ),
    ] = None,
    until: Annotated[
        int | None,
        Query(ge=0, description="Forecast up to this open time (UTC ms) instead of `steps`"),
    ] = None,
) -> ForecastOut:
    """A multi-step forecast from the current model, each predicted return fed back as the
    next input (recursive); intervals widen as √k. The forecaster stores the path after each
    prediction; this slices it."""
    if steps is not None and until is not None:
        raise HTTPException(422, "give steps or until, not both")
    try:
        return await ctx.forecasts.forecast(series, steps=steps, until=until)
    except ForecastUnavailable as e:
        raise HTTPException(409, str(e)) from None
    except BeyondPath as e:
        raise HTTPException(422, str(e)) from None
