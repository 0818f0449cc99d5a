"""Econometric volatility baselines of the next log return: EWMA, GARCH(1,1)-t and a static one.

All three are one recursion, fitted on a train window and then *filtered* forward one return at
a time with fixed parameters::

    var_{t+1} = omega + alpha * (r_t - mu)^2 + beta * var_t

- ``ewma``: RiskMetrics, ``omega = 0, alpha = 1 - lambda, beta = lambda`` (lambda = 0.94), mean 0.
- ``garch``: GARCH(1,1) with Student-t errors, fitted by maximum likelihood with the ``arch``
  package on the train window (returns multiplied by a data-dependent factor first: ``arch``
  optimises badly on 1m returns of order 1e-4; the parameters are unscaled afterwards).
- ``static``: ``alpha = 0, beta = 1``: one variance for every candle, the train window's. With a
  zero point forecast this is today's static residual-quantile interval around the last close.

The shape of the predictive distribution (``df`` and the scale per unit of filtered sigma) comes
from the model for GARCH (its t's ``nu``, unit variance) and, for EWMA and static, from the
train window's standardised residuals ``z = (r - mu) / sigma_t``: the t with ``z``'s variance
whose 90 % central interval is ``z``'s *empirical* one (symmetrised), so the published interval
is the empirical-quantile interval and the variance forecast stays that of the filter.

Filtering is a few float operations per candle (microseconds); the state (:class:`FilterState`:
the next candle's variance and the last residual) is a tiny dict that serving can keep.

Bad inputs never raise out of :func:`fit_model`: a GARCH fit that fails, does not converge or
gives parameters that are not finite or explosive falls back to EWMA; a series with no
variance falls back to a floor sigma; each fallback is one structlog warning with the series
fields given in ``context``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import structlog
from scipy import optimize, stats

from forecaster.distribution import ReturnDistribution

__all__ = [
    "EWMA_LAMBDA",
    "MODEL_KINDS",
    "SIGMA_FLOOR",
    "FilterState",
    "VarianceModel",
    "fit_ewma",
    "fit_garch",
    "fit_model",
    "fit_static",
    "standardised_shape",
]

log = structlog.get_logger(__name__)

EWMA_LAMBDA = 0.94
MODEL_KINDS = ("garch", "ewma", "static")
# The smallest sigma of a next log return any model publishes: a constant series (or a long run
# of zero-range candles) would otherwise drive the variance to exactly 0, a degenerate forecast.
SIGMA_FLOOR = 1e-8
_VAR_FLOOR = SIGMA_FLOOR**2
_BURN_IN = 20  # EWMA residuals before this many returns mostly reflect the start value
_MIN_RETURNS = 30  # fewer finite train returns than this: nothing to fit
_DF_MIN, _DF_MAX = 2.1, 1000.0
_Q_OUTER = 0.9  # the central level whose empirical |z| quantile the shape reproduces


@dataclass(frozen=True, slots=True)
class FilterState:
    """Where the filter stands: ``var`` is the variance forecast of the *next* log return.

    ``resid`` is the last absorbed residual ``r - mu`` (kept for inspection), ``n`` how many
    returns were absorbed since the model was fitted.
    """

    var: float
    resid: float = 0.0
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilterState:
        """Inverse of :meth:`to_dict`."""
        return cls(float(d["var"]), float(d.get("resid", 0.0)), int(d.get("n", 0)))


@dataclass(frozen=True, slots=True)
class VarianceModel:
    """A fitted variance recursion and the shape of its predictive distribution (log returns).

    ``kind`` is what was fitted (``garch``, ``ewma`` or ``static``); ``requested`` what was
    asked for, which differs after a fallback (``fallback`` says why).
    """

    kind: str
    mu: float
    omega: float
    alpha: float
    beta: float
    df: float  # inf = Gaussian
    z_scale: float  # the t's scale per unit of filtered sigma
    init_var: float  # the variance forecast of the first return after the fit's start
    requested: str = ""
    fallback: str | None = None

    # filtering ---------------------------------------------------------------------------
    def initial_state(self) -> FilterState:
        """The state before the first return of the fit's window."""
        return FilterState(max(self.init_var, _VAR_FLOOR))

    def step(self, state: FilterState, r: float) -> FilterState:
        """Absorb one observed log return; a NaN (a hole) leaves the state as it is."""
        if not math.isfinite(r):
            return state
        e = r - self.mu
        var = self.omega + self.alpha * e * e + self.beta * state.var
        return FilterState(max(var, _VAR_FLOOR), e, state.n + 1)

    def filter(
        self, returns: np.ndarray, state: FilterState | None = None
    ) -> tuple[np.ndarray, FilterState]:
        """Variance forecast of each ``returns[i]`` made from ``returns[:i]`` only, and the state
        after the last return (ready to forecast the one after it)."""
        s = self.initial_state() if state is None else state
        r = np.asarray(returns, dtype=np.float64)
        out = np.empty(r.size, dtype=np.float64)
        # A plain loop: the recursion is sequential and the floor makes it non-linear.
        mu, om, al, be = self.mu, self.omega, self.alpha, self.beta
        var, resid, n = s.var, s.resid, s.n
        for i, x in enumerate(r.tolist()):
            out[i] = var
            if not math.isnan(x):
                resid = x - mu
                var = max(om + al * resid * resid + be * var, _VAR_FLOOR)
                n += 1
        return out, FilterState(var, resid, n)

    def distribution(self, var: float | np.ndarray) -> ReturnDistribution:
        """The predictive distribution for variance forecast(s) ``var``."""
        v = np.maximum(np.atleast_1d(np.asarray(var, dtype=np.float64)), _VAR_FLOOR)
        return ReturnDistribution.of(self.mu, self.z_scale * np.sqrt(v), self.df)

    def scale_at(self, var: float) -> float:
        """The scale of :meth:`distribution` for one variance forecast, in plain floats (the
        same number: sqrt is correctly rounded in both), for the one-point serving path."""
        return self.z_scale * math.sqrt(max(var, _VAR_FLOOR))

    def forecast(
        self, returns: np.ndarray, state: FilterState | None = None
    ) -> tuple[ReturnDistribution, FilterState]:
        """:meth:`filter`, as distributions: entry ``i`` is the forecast of ``returns[i]``."""
        var, final = self.filter(returns, state)
        return self.distribution(var), final

    # persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``df = inf`` is written as ``None``)."""
        d = asdict(self)
        d["df"] = None if math.isinf(self.df) else self.df
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VarianceModel:
        """Inverse of :meth:`to_dict`."""
        df = d.get("df")
        return cls(
            kind=str(d["kind"]),
            mu=float(d["mu"]),
            omega=float(d["omega"]),
            alpha=float(d["alpha"]),
            beta=float(d["beta"]),
            df=math.inf if df is None else float(df),
            z_scale=float(d["z_scale"]),
            init_var=float(d["init_var"]),
            requested=str(d.get("requested", "")),
            fallback=d.get("fallback"),
        )


def standardised_shape(z: np.ndarray) -> tuple[float, float]:
    """``(df, scale)`` of the centred t with ``z``'s variance and its empirical 90 % interval.

    The interval is symmetrised (the 0.9 quantile of ``|z|``); matching the variance too keeps
    the variance forecast honest (QLIKE) while the published interval is the empirical one.
    Tails lighter than the Gaussian's give a Gaussian (``df = inf``) with the matched interval.
    """
    a = np.asarray(z, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size < 2:
        raise ValueError("need standardised residuals to fit a shape")
    outer = float(np.quantile(np.abs(a), _Q_OUTER))
    sd = float(np.sqrt(np.mean(a**2)))
    if not (outer > 0 and sd > 0):
        raise ValueError("standardised residuals have no spread")
    p = 0.5 + _Q_OUTER / 2

    def unit_q(df: float) -> float:  # the p-quantile of a unit-variance t
        return float(stats.t.ppf(p, df) * math.sqrt((df - 2.0) / df))

    target = outer / sd
    if target >= unit_q(_DF_MAX):
        return math.inf, outer / float(stats.norm.ppf(p))
    if target <= unit_q(_DF_MIN):
        df = _DF_MIN
    else:
        df = float(optimize.brentq(lambda d: unit_q(d) - target, _DF_MIN, _DF_MAX, xtol=1e-6))
    return df, outer / float(stats.t.ppf(p, df))


def _finite(returns: np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    return r[np.isfinite(r)]


def _floor_model(kind: str, requested: str, mu: float, reason: str) -> VarianceModel:
    return VarianceModel(
        kind=kind,
        mu=mu,
        omega=0.0,
        alpha=0.0,
        beta=1.0,
        df=math.inf,
        z_scale=1.0,
        init_var=_VAR_FLOOR,
        requested=requested,
        fallback=reason,
    )


def fit_static(
    returns: np.ndarray, *, context: Mapping[str, Any] | None = None, requested: str = "static"
) -> VarianceModel:
    """One variance for every candle (the train window's), shape from its empirical quantiles.

    Mean 0 (the naive forecast). A window with no spread gives the floor sigma, logged.
    """
    r = _finite(returns)
    var = float(np.mean(r**2)) if r.size else 0.0
    if r.size < 2 or not var > _VAR_FLOOR:
        log.warning(
            "volatility_zero_variance", model=requested, fallback="floor", returns=int(r.size),
            **dict(context or {}),
        )  # fmt: skip
        return _floor_model("static", requested, 0.0, "zero_variance")
    try:
        df, scale = standardised_shape(r / math.sqrt(var))
    except ValueError:
        # Mostly zeros (e.g. zero-range candles): no 50 % quantile to match; Gaussian.
        df, scale = math.inf, 1.0
    return VarianceModel("static", 0.0, 0.0, 0.0, 1.0, df, scale, var, requested)


def fit_ewma(
    returns: np.ndarray,
    *,
    lam: float = EWMA_LAMBDA,
    use_mean: bool = False,
    context: Mapping[str, Any] | None = None,
    requested: str = "ewma",
) -> VarianceModel:
    """RiskMetrics EWMA on the train window, shape from its empirical standardised residuals.

    The start variance is the mean squared return of the window's first returns. ``use_mean``
    centres on the window's mean return instead of 0. Falls back to :func:`fit_static` (floor)
    when the window has no variance.
    """
    r = _finite(returns)
    mu = float(np.mean(r)) if use_mean and r.size else 0.0
    e2 = (r - mu) ** 2
    if r.size < _MIN_RETURNS or not float(np.mean(e2)) > _VAR_FLOOR:
        log.warning(
            "volatility_fit_fallback", model=requested, fallback="static",
            reason="too_few_returns" if r.size < _MIN_RETURNS else "zero_variance",
            returns=int(r.size), **dict(context or {}),
        )  # fmt: skip
        return replace(fit_static(r, context=context, requested=requested), fallback="ewma_failed")
    init = float(np.mean(e2[: max(_BURN_IN, 1)]))
    base = VarianceModel("ewma", mu, 0.0, 1.0 - lam, lam, math.inf, 1.0, init, requested)
    var, _ = base.filter(r)
    z = (r - mu)[_BURN_IN:] / np.sqrt(var[_BURN_IN:])
    try:
        df, scale = standardised_shape(z)
    except ValueError:
        df, scale = math.inf, 1.0
    return replace(base, df=df, z_scale=scale)


def _garch_problem(params: Mapping[str, float]) -> str | None:
    """Why GARCH parameters cannot be used (``None`` when they can)."""
    need = ("mu", "omega", "alpha[1]", "beta[1]", "nu")
    if any(k not in params for k in need):
        return "missing_parameters"
    vals = [float(params[k]) for k in need]
    if not all(math.isfinite(v) for v in vals):
        return "non_finite_parameters"
    _, omega, alpha, beta, nu = vals
    if omega <= 0 or alpha < 0 or beta < 0:
        return "negative_parameters"
    # alpha + beta = 1 (integrated GARCH) is where arch's optimiser often lands on crypto
    # returns: the one-step forecast is still well defined, so only an explosive fit is refused.
    if alpha + beta > 1.0 + 1e-6:
        return "explosive"
    if nu <= 2:
        return "infinite_variance"
    return None


def fit_garch(
    returns: np.ndarray,
    *,
    context: Mapping[str, Any] | None = None,
    maxiter: int = 500,
) -> VarianceModel:
    """GARCH(1,1)-t (constant mean) fitted by ``arch`` on the train window; EWMA on failure.

    Returns are scaled to a standard deviation of about 10 before fitting (``arch``'s optimiser
    wants variances between 1 and 1000) and the parameters are unscaled. The filter starts from
    the window's sample variance.
    """
    r = _finite(returns)
    ctx = dict(context or {})
    sd = float(np.std(r)) if r.size else 0.0
    reason: str | None = None
    params: dict[str, float] = {}
    if r.size < _MIN_RETURNS or not sd > SIGMA_FLOOR:
        reason = "too_few_returns" if r.size < _MIN_RETURNS else "zero_variance"
    else:
        k = 10.0 / sd
        try:
            from arch import arch_model  # noqa: PLC0415 (arch loads only when GARCH is fitted)

            with warnings.catch_warnings():
                # Convergence is checked below from the result, not from warnings.
                warnings.simplefilter("ignore")
                res = arch_model(
                    r * k, mean="Constant", vol="GARCH", p=1, q=1, dist="t", rescale=False
                ).fit(disp="off", show_warning=False, options={"maxiter": maxiter})
            if int(res.convergence_flag) != 0:
                reason = "not_converged"
            else:
                p = {str(n): float(v) for n, v in res.params.items()}
                reason = _garch_problem(p)
                if reason is None:
                    params = {
                        "mu": p["mu"] / k,
                        "omega": p["omega"] / k**2,
                        "alpha": p["alpha[1]"],
                        "beta": p["beta[1]"],
                        "nu": p["nu"],
                    }
        except Exception as e:
            # Whatever the optimiser raises (ValueError, LinAlgError, overflow, ...): a baseline's
            # failed fit must fall back, never take the caller down.
            reason = f"fit_error: {type(e).__name__}: {e}"[:200]
    if reason is not None or not params:
        log.warning("garch_fit_failed", reason=reason, fallback="ewma", returns=int(r.size), **ctx)
        return replace(fit_ewma(r, context=ctx, requested="garch"), fallback=reason)
    nu = min(params["nu"], _DF_MAX)
    # Start from the window's sample variance, not the unconditional one: with alpha + beta
    # near 1 (typical of crypto returns) the latter is huge and poorly determined.
    start = float(np.mean((r - params["mu"]) ** 2))
    return VarianceModel(
        kind="garch",
        mu=params["mu"],
        omega=params["omega"],
        alpha=params["alpha"],
        beta=params["beta"],
        df=nu,
        z_scale=math.sqrt((nu - 2.0) / nu),  # arch's t has unit variance
        init_var=max(start, _VAR_FLOOR),
        requested="garch",
    )


def fit_model(
    kind: str, returns: np.ndarray, *, context: Mapping[str, Any] | None = None
) -> VarianceModel:
    """Fit ``kind`` (one of :data:`MODEL_KINDS`) on train-window log returns; never raises for
    bad data (falls back GARCH → EWMA → static → floor, each logged)."""
    if kind == "garch":
        return fit_garch(returns, context=context)
    if kind == "ewma":
        return fit_ewma(returns, context=context)
    if kind == "static":
        return fit_static(returns, context=context)
    raise ValueError(f"unknown volatility model {kind!r}; use one of {', '.join(MODEL_KINDS)}")
