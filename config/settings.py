"""The one settings model of cryptocast.

Values come, in order of precedence, from keyword arguments, ``CRYPTOCAST_*`` environment
variables (nested groups with ``__``: ``CRYPTOCAST_MODEL__UNITS=32``), an optional TOML file
(``--config PATH`` or ``CRYPTOCAST_CONFIG``), then the defaults below. Every setting has a sane
default except secrets. A bad value fails at start with :class:`SettingsError`, whose message is
one line naming the setting and why.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.series import SeriesError, SeriesId

ENV_PREFIX = "CRYPTOCAST_"
FeatureName = Literal["ret", "range", "vol", "gk", "tod_sin", "tod_cos"]
HeadName = Literal["student_t", "gaussian", "mse"]
IngestMode = Literal["auto", "ws", "watch", "poll"]
ALL_FEATURES: tuple[FeatureName, ...] = ("ret", "range", "vol", "gk", "tod_sin", "tod_cos")


class SettingsError(ValueError):
    """A configuration problem, reported as one line that names the setting."""


class ModelSettings(BaseModel):
    """The forecasting model. The defaults are the seed architecture; ``tiny`` is for tests."""

    units: int = Field(50, ge=1, le=1024, description="LSTM units per layer")
    layers: int = Field(2, ge=1, le=4, description="Stacked LSTM layers")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout after each LSTM but the last")
    window: int = Field(60, ge=2, le=2000, description="Input window length in candles")
    features: list[FeatureName] = Field(
        default_factory=lambda: list(ALL_FEATURES),
        description="Stationary input features: log return, log high/low range, log volume "
        "change, Garman-Klass volatility of the candle, time of day (sin/cos; constant on daily "
        "and longer timeframes)",
    )
    head: HeadName = Field(
        "student_t",
        description="Output head: 'student_t' or 'gaussian' (location, scale and for the t its "
        "degrees of freedom of the next log return, trained by negative log-likelihood) or "
        "'mse' (a point, trained by squared error; its spread is the early-stop residuals')",
    )
    normalisation: Literal["trailing_rms", "none"] = Field(
        "trailing_rms",
        description="Per-window input normalisation: 'trailing_rms' divides each window's "
        "return-unit features and its target by the window's RMS log return (one model across "
        "volatility regimes); 'none' feeds raw features",
    )
    epochs: int = Field(30, ge=1, le=1000, description="Maximum epochs (early stopping applies)")
    patience: int = Field(4, ge=1, le=100, description="Early-stopping patience in epochs")
    batch_size: int = Field(256, ge=1, le=65536, description="Training batch size")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate")
    train_candles: int = Field(
        20_000, ge=100, description="Most recent candles used for one training run"
    )
    early_stop_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="Share of the early-stop slice"
    )
    holdout_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of the holdout slice")
    interval_level: float = Field(0.9, gt=0, lt=1, description="Prediction interval coverage")
    scope: Literal["global", "series"] = Field(
        "global",
        description="'global': one model per timeframe, trained on windows of every configured "
        "series of that timeframe and serving them all (a new series is served from its first "
        "full window); 'series': one model per series",
    )
    global_sample: int = Field(
        60_000,
        ge=1000,
        description="Most training windows one global-model training draws across its series "
        "(a random sample: its memory does not grow with the number of series)",
    )
    seed: int = Field(0, description="Random seed for weight init and shuffling")
    threads: int = Field(
        1, ge=1, le=256, description="TensorFlow intra/inter-op threads for training"
    )
    nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of training processes: serving wins the CPU"
    )


class ScheduleSettings(BaseModel):
    """When models are retrained and judged too old; counted in candles of the series."""

    retrain_every: int = Field(60, ge=1, description="Retrain after this many new candles")
    max_model_age: int = Field(
        1440, ge=1, description="A model older than this (in candles) is stale: retrain forced"
    )
    stale_after: int = Field(
        3, ge=1, description="A series with no new candle for this many timeframes is stale"
    )
    min_train_candles: int = Field(500, ge=50, description="Candles needed before a first training")
    check_interval_s: float = Field(
        5.0, gt=0, description="How often the scheduler checks whether a series needs training"
    )
    keep_versions: int = Field(5, ge=1, description="Model versions kept per series")


class IngestSettings(BaseModel):
    """Live ingestion tuning."""

    streams_per_connection: int = Field(
        200, ge=1, le=1024, description="Binance allows 1,024 streams per websocket connection"
    )
    stale_factor: float = Field(
        3.0, gt=1, description="Reconnect when no message arrived for this × the expected interval"
    )
    max_frame_bytes: int = Field(1 << 20, ge=1024, description="Largest websocket frame accepted")
    reconnect_min_s: float = Field(0.2, gt=0, description="First reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="Reconnect delay cap (with jitter)")
    max_connection_age_s: float = Field(
        23 * 3600.0, gt=0, description="Reconnect proactively before Binance's 24 h limit"
    )
    poll_interval_s: float = Field(10.0, gt=0, description="REST polling period (ccxt sources)")
    mode: IngestMode = Field(
        "auto",
        description="How live candles are read: 'ws' (Binance's kline websocket, binance only), "
        "'watch' (ccxt.pro watch_ohlcv), 'poll' (ccxt fetch_ohlcv every poll_interval_s), or "
        "'auto' (ws for binance, else watch where ccxt.pro has it, else poll)",
    )
    exchange_modes: dict[str, IngestMode] = Field(
        default_factory=dict,
        description='Per-exchange override of mode, e.g. {"kraken": "poll"}',
    )
    clock_margin_s: float = Field(
        0.5,
        ge=0,
        description="How far (wall seconds) our reading of the exchange clock may be off: a "
        "candle the exchange says closed may close up to this far ahead of it, and a REST "
        "candle not followed by another counts as closed only this long after its close",
    )

    def mode_for(self, exchange: str) -> IngestMode:
        """The live mode of ``exchange`` with ``auto`` left to the caller to resolve."""
        return self.exchange_modes.get(exchange, self.mode)


# The longest multi-step path the forecaster may be asked to store (forecast.path_steps).
MAX_PATH_STEPS = 1000


class ForecastSettings(BaseModel):
    """The serving side of the forecaster."""

    lease_ttl_s: float = Field(
        10.0, gt=0.5, description="Serve-lease TTL: a dead replica's series move after this long"
    )
    replica_id: str | None = Field(None, description="Replica name (default: host-pid-random)")
    read_batch: int = Field(100, ge=1, le=10_000, description="Events read per XREADGROUP")
    score_window: int = Field(500, ge=10, description="Predictions in the rolling live score")
    calibration_gamma: float = Field(
        0.005,
        ge=0.0,
        le=0.2,
        description="Step of the live interval calibration (adaptive conformal inference): "
        "after each candle the level moves by gamma x (miss - (1 - interval_level)); 0 turns it "
        "off (the interval stays at the holdout-calibrated level)",
    )
    path_steps: int = Field(
        240,
        ge=1,
        le=MAX_PATH_STEPS,
        description="Candles ahead in the multi-step forecast path the forecaster stores after "
        "each prediction (the dashboard's forecast line; the web serves at most this many)",
    )
    inference: Literal["numpy", "keras"] = Field(
        "numpy",
        description="'numpy': the fast forward pass; 'keras': model.predict per candle (the slow "
        "baseline the latency benchmark compares against)",
    )
    blas_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="BLAS threads of a serving process: where the trainer and Redis share the "
        "cores, a second one mostly waits for a core (100 windows: 9 ms with one thread; with "
        "two, 15 ms median and 99 ms worst, beside one busy process on two cores)",
    )


class WebSettings(BaseModel):
    """The dashboard and read-only HTTP/WebSocket API (``cryptocast web``)."""

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address to bind; anything beyond loopback requires CRYPTOCAST_WEB__TOKEN",
    )
    port: int = Field(8080, ge=1, le=65535, description="Port of the dashboard and API")
    token: SecretStr | None = Field(
        None,
        description="Bearer token the API requires (Authorization: Bearer <token>); "
        "required when host is not a loopback address",
    )
    max_streams: int = Field(
        200, ge=1, le=100_000, description="Concurrent WebSocket prediction streams served"
    )
    status_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a series' health (candle and hole counts) is reused between "
        "requests, so dashboards never add Redis load in proportion to viewers",
    )


class Settings(BaseSettings):
    """All of cryptocast's settings. See the README's configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis://, rediss:// (TLS) or unix:// URL; may carry the password",
    )
    redis_password: SecretStr | None = Field(
        None, description="Redis password, overriding any password in the URL (never logged)"
    )
    redis_cluster: bool = Field(False, description="Connect to a Redis Cluster")
    key_prefix: str = Field("cryptocast", pattern=r"^[A-Za-z0-9_.\-]+$", description="Key prefix")
    series: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["binance:BTC/USDT:1m"],
        description="Comma-separated series: exchange:symbol:timeframe",
    )
    retention: int = Field(100_000, ge=100, description="Candles kept per series")
    event_stream_len: int = Field(
        100_000, ge=100, description="Closed-candle events kept per series"
    )
    prediction_stream_len: int = Field(10_000, ge=10, description="Predictions kept per series")
    clock: Literal["wall", "exchange"] = Field(
        "wall", description="'wall', or 'exchange' to follow the exchange's server time"
    )
    binance_ws_url: str = Field(
        "wss://stream.binance.com:9443", description="Binance websocket base"
    )
    binance_rest_url: str = Field("https://api.binance.com", description="Binance REST base")
    log_format: Literal["json", "console", "auto"] = Field(
        "auto", description="'json' lines, readable 'console', or 'auto' (console on a TTY)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level logged"
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 = off")
    model_cache_dir: Path = Field(
        Path("var/models"), description="Local cache of model artifacts (only a cache)"
    )
    data_dir: Path = Field(Path("var"), description="Local data (private redis-server, plots)")
    model: ModelSettings = Field(default_factory=ModelSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @field_validator("series", mode="before")
    @classmethod
    def _split_series(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in (p.strip() for p in v.split(",")) if s]
        return v

    @field_validator("series")
    @classmethod
    def _check_series(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one series is needed")
        seen: set[str] = set()
        for text in v:
            try:
                sid = SeriesId.parse(text)
            except SeriesError as e:
                raise ValueError(str(e)) from None
            if sid.is_global:
                raise ValueError(f"series {text!r}: exchange id {sid.exchange!r} is reserved")
            key = sid.key
            if key in seen:
                raise ValueError(f"series {key!r} is listed twice")
            seen.add(key)
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"scheme {parts.scheme or '(none)'!r} is not redis://, rediss:// or unix://"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the URL has no host")
        return v

    @field_validator("binance_ws_url", "binance_rest_url")
    @classmethod
    def _check_http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http(s):// or ws(s):// URL")
        return v.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path_from_env()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # derived ------------------------------------------------------------------------------
    @property
    def series_ids(self) -> list[SeriesId]:
        return [SeriesId.parse(s) for s in self.series]

    @property
    def redis_url_masked(self) -> str:
        return mask_url(self.redis_url.get_secret_value())


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _config_path_from_env() -> Path | None:
    raw = os.environ.get(ENV_PREFIX + "CONFIG")
    return Path(raw) if raw else None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, or raise :class:`SettingsError` with a one-line message.

    ``config_file`` (the ``--config`` flag) wins over ``CRYPTOCAST_CONFIG``.
    """
    path = Path(config_file) if config_file else _config_path_from_env()
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"config file {path} (CRYPTOCAST_CONFIG / --config) does not exist")
        try:
            with path.open("rb") as f:
                tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"config file {path} is not valid TOML: {e}") from None
    old = os.environ.get(ENV_PREFIX + "CONFIG")
    try:
        if path is not None:
            os.environ[ENV_PREFIX + "CONFIG"] = str(path)
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None
    finally:
        if path is not None:
            if old is None:
                os.environ.pop(ENV_PREFIX + "CONFIG", None)
            else:
                os.environ[ENV_PREFIX + "CONFIG"] = old


def _describe(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"]]
    env_name = ENV_PREFIX + "__".join(p.upper() for p in loc if not p.isdigit())
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        return f"unknown setting {env_name} ({'.'.join(loc)}){more}"
    shown = "" if "redis" in loc[0] or "password" in loc[0] else f" (got {err.get('input')!r})"
    return f"invalid setting {env_name}: {msg}{shown}{more}"
