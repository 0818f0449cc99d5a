"""Training's holdout: every candidate distribution scored on the same points; the champion.

Candidates (:data:`CANDIDATE_KINDS`): the freshly trained LSTM, EWMA(0.94), GARCH(1,1)-t and the
static interval (:mod:`forecaster.econometric`, each fitted on the train slice's returns only and
filtered forward with fixed parameters, so the forecast of a holdout candle reads only earlier
candles). Each is scored on the same holdout target candles as the naive forecast: the point
metrics of :func:`forecaster.metrics.score` for its median, and the mean CRPS of its predictive
distribution of the log return (a proper score). The champion is the lowest CRPS; it is what the
version publishes.

Two adjustments, both measured on the holdout and recorded in the metadata:

- **point**: when a candidate's median has a higher MAE than the last close, its point falls
  back to the last close (``point: naive``; the spread is kept), so the published point is never
  worse than naive on the holdout without saying so.
- **calibrated level**: the nominal level at which the candidate's central interval covers
  ``interval_level`` of the holdout (split conformal on the PIT ``|2F(r) - 1|``); serving starts
  its adaptive calibration from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.econometric import FilterState, VarianceModel, fit_model
from forecaster.features import WindowSet, log_returns
from forecaster.metrics import mae, price_from_return, score

__all__ = [
    "CANDIDATE_KINDS",
    "ECONOMETRIC_KINDS",
    "Candidate",
    "calibrated_level",
    "champion_meta",
    "choose_champion",
    "econ_entry",
    "econometric_candidates",
    "score_candidate",
]

log = structlog.get_logger(__name__)

ECONOMETRIC_KINDS = ("garch", "ewma", "static")
CANDIDATE_KINDS = ("lstm", *ECONOMETRIC_KINDS)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate's forecasts on the holdout points, and what serving needs to publish it."""

    kind: str
    dist: ReturnDistribution  # on the holdout points, before the point adjustment
    model: VarianceModel | None = None  # econometric candidates
    state: FilterState | None = None  # filter state after the last candle of the training data
    state_time: int | None = None  # open time of that candle


def econometric_candidates(
    used: CandleArrays, train_end: int, ws: WindowSet, context: dict[str, Any]
) -> dict[str, Candidate]:
    """EWMA, GARCH-t and static, fitted on returns of rows ``[0, train_end)`` of ``used``.

    Each is filtered over every row of ``used`` with its fixed parameters: the forecast of row
    ``t`` reads returns of rows before ``t`` only. A fit that fails falls back (econometric's
    rules, logged there); the candidate keeps the kind that was actually fitted's parameters.
    """
    rets = log_returns(used)
    out: dict[str, Candidate] = {}
    for kind in ECONOMETRIC_KINDS:
        model = fit_model(kind, rets[:train_end], context=context)
        var, final = model.filter(rets)
        out[kind] = Candidate(
            kind=kind,
            dist=model.distribution(var[ws.rows]),
            model=model,
            state=final,
            state_time=int(used.open_time[-1]),
        )
    return out


def filtered_on(model: VarianceModel, arrays: CandleArrays, rows: np.ndarray) -> ReturnDistribution:
    """A fitted model's forecasts of ``rows`` of ``arrays``, filtered from the first candle."""
    var, _ = model.filter(log_returns(arrays))
    return model.distribution(var[rows])


def calibrated_level(dist: ReturnDistribution, r: np.ndarray, level: float) -> float:
    """The nominal level whose central intervals cover ``level`` of the returns ``r``."""
    d = np.sort(np.abs(2.0 * dist.cdf(r) - 1.0))
    n = d.size
    if not n:
        return level
    k = math.ceil((n + 1) * level)  # the conformal rank (finite-sample valid)
    q = float(d[min(k, n) - 1])
    return float(min(max(q, 0.01), 0.999))


def point_is_naive(dist: ReturnDistribution, ws: WindowSet) -> bool:
    """True when the distribution's median forecasts the close worse (MAE) than the last close."""
    pred = price_from_return(ws.last_close, dist.loc)
    return not mae(ws.actual_close, pred) <= mae(ws.actual_close, ws.last_close)


def published(dist: ReturnDistribution, naive_point: bool) -> ReturnDistribution:
    """The distribution as published: centred on 0 when the point falls back to naive."""
    if not naive_point:
        return dist
    return ReturnDistribution(np.zeros_like(dist.loc), dist.scale, dist.df)


def score_candidate(
    dist: ReturnDistribution, ws: WindowSet, level: float, mase_scale: float
) -> dict[str, Any]:
    """Point metrics, CRPS, and coverage at the nominal and at the calibrated level."""
    cal = calibrated_level(dist, ws.target_ret, level)
    lo, hi = dist.interval(cal)
    nlo, nhi = dist.interval(level)
    s = score(
        ws.actual_close,
        price_from_return(ws.last_close, dist.loc),
        ws.last_close,
        scale=mase_scale,
        lower=price_from_return(ws.last_close, lo),
        upper=price_from_return(ws.last_close, hi),
    ).to_json()
    r = ws.target_ret
    s.update(
        crps=_num(float(np.mean(dist.crps(r)))),
        calibrated_level=cal,
        coverage_nominal=_num(float(np.mean((r >= nlo) & (r <= nhi)))),
        sigma_mean=_num(float(np.mean(dist.sigma()))),
    )
    return s


def choose_champion(scores: dict[str, dict[str, Any]]) -> str:
    """The candidate kind with the lowest finite holdout CRPS (``lstm`` wins a tie).

    A candidate whose fit fell back to another kind (``fitted`` differs: e.g. a GARCH that did
    not converge, served as EWMA) is not eligible: the message would name the wrong model.
    """
    best, best_crps = "lstm", math.inf
    for kind in CANDIDATE_KINDS:
        if (scores.get(kind) or {}).get("fitted", kind) != kind:
            continue
        c = (scores.get(kind) or {}).get("crps")
        if isinstance(c, int | float) and math.isfinite(c) and c < best_crps:
            best, best_crps = kind, float(c)
    return best


def champion_meta(holdout: dict[str, Any], econ: dict[str, Candidate]) -> dict[str, Any]:
    """What serving needs to publish the champion (params and filter state for econometric)."""
    kind = holdout["champion"]
    scores = holdout["candidate"] if kind == "lstm" else holdout[kind]
    naive_mae = holdout["naive"]["mae"]
    champ: dict[str, Any] = {
        "kind": kind,
        "crps": scores["crps"],
        "calibrated_level": scores["calibrated_level"],
        "skill": _num(1.0 - scores["mae"] / naive_mae) if naive_mae else None,
    }
    if kind != "lstm":
        champ.update(econ_entry(holdout, econ[kind]))
    return champ


def econ_entry(holdout: dict[str, Any], cand: Candidate) -> dict[str, Any]:
    """Parameters and end-of-training filter state of an econometric candidate (for serving)."""
    assert cand.model is not None and cand.state is not None
    return {
        "point": holdout[cand.kind].get("point", "model"),
        "calibrated_level": holdout[cand.kind]["calibrated_level"],
        "params": cand.model.to_dict(),
        "state": cand.state.to_dict(),
        "state_time": cand.state_time,
    }


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
