"""Loading a trained model and predicting with it, fast.

A model travels as two things: the ``.keras`` file's bytes (weights and architecture, loaded with
Keras's ``safe_mode`` on; nothing is ever unpickled) and a JSON metadata dict (features, window,
scaler, interval). Serving calls :meth:`LoadedModel.predict_next` on every closed candle; it runs
the LSTM forward pass in numpy from weights extracted once at load, because a Keras
``model.predict`` call costs milliseconds of framework overhead for a microsecond-sized problem.
:meth:`LoadedModel.predict_keras` keeps the slow path as the benchmark's baseline.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import structlog

from config.settings import ModelSettings
from forecaster.data import CandleArrays
from forecaster.features import (
    FEATURE_NAMES,
    FeatureError,
    Scaler,
    feature_matrix,
    target_rows,
    window_features,
)

if TYPE_CHECKING:
    import keras

__all__ = [
    "META_KIND",
    "META_SCHEMA_VERSION",
    "ArtifactError",
    "Forecast",
    "LoadedModel",
    "NumpyLSTM",
]

log = structlog.get_logger(__name__)

META_SCHEMA_VERSION = 1
META_KIND = "lstm-returns"


class ArtifactError(ValueError):
    """A model artifact or its metadata that cannot be served (corrupt, foreign, mismatched)."""


class Forecast(NamedTuple):
    """One next-candle forecast: log return, reconstructed close, and interval bounds (price)."""

    pred_return: float
    pred_close: float
    lower: float
    upper: float


class NumpyLSTM:
    """The forward pass of a stack of Keras LSTMs + Dense(1), in numpy, batched over windows.

    At batch size 1 (serving) the cost is numpy's per-call overhead, not arithmetic, so the pass
    is arranged to make few calls per step:

    - Layers run as a wavefront: at step ``k`` layer ``l`` processes time ``k - l``, reading the
      output layer ``l-1`` produced at step ``k-1``. One state row holds every layer's ``h``, a
      constant 1 and the current input candle's features; one matmul with a block matrix
      (recurrent kernels on the diagonal, each layer's input kernel fed by the layer below, the
      biases in the row of the constant 1, the first layer's input kernel in the rows of the
      features) advances all layers at once: ``T + L - 1`` steps instead of ``T * L``. Layers that
      have not started are held at zero state; outputs of steps past the window are never read.
    - Gate columns are reordered from Keras's ``i, f, c, o`` to ``i, f, o, c`` so the three
      sigmoid gates are one contiguous slice; ``sigmoid(z) = (tanh(z/2) + 1)/2`` with the halving
      folded into the weights lets one ``tanh`` over all gates serve every gate, and all updates
      run in place on preallocated buffers.

    Dropout is the identity at inference.
    """

    _KERAS_TO_OURS = (0, 1, 3, 2)  # gate order i, f, c, o  →  i, f, o, c

    def __init__(
        self,
        lstm_weights: list[tuple[np.ndarray, ...]],
        dense: tuple[np.ndarray, ...],
        dtype: type[np.floating[Any]] = np.float32,
    ) -> None:
        units = {w[1].shape[0] for w in lstm_weights}
        if len(units) != 1:
            raise ArtifactError(f"LSTM layers of unequal widths {sorted(units)} are not supported")
        u = units.pop()
        n_layers = len(lstm_weights)
        n_feat = int(lstm_weights[0][0].shape[0])
        width = n_layers * u
        perm = list(self._KERAS_TO_OURS)
        gate_scale = np.array([0.5, 0.5, 0.5, 1.0])[None, :, None]  # i, f, o halved; c not

        def gates(m: np.ndarray) -> np.ndarray:
            return m.reshape(m.shape[0], 4, u)[:, perm, :] * gate_scale

        block = np.zeros((width + 1 + n_feat, 4, n_layers, u), dtype=np.float64)
        for li, (kernel, recurrent, bias) in enumerate(lstm_weights):
            block[li * u : (li + 1) * u, :, li, :] = gates(recurrent)
            block[width, :, li, :] = gates(bias[None, :])[0]
            if li == 0:
                block[width + 1 :, :, 0, :] = gates(kernel)
            else:
                block[(li - 1) * u : li * u, :, li, :] = gates(kernel)
        self.dtype = dtype
        self.units = u
        self.n_layers = n_layers
        self.n_features = n_feat
        self.block = np.ascontiguousarray(block.reshape(-1, 4 * width), dtype=dtype)
        self.dense_w = dense[0].astype(dtype)  # (U, 1)
        self.dense_b = dense[1].astype(dtype)  # (1,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scaled windows ``(B, T, F)`` → scaled outputs ``(B,)``."""
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[2] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {x.shape[2]}")
        h = wavefront(self.block[None], x[None], self.units, self.n_layers)[0]
        return (h @ self.dense_w + self.dense_b)[:, 0]


def wavefront(blocks: np.ndarray, x: np.ndarray, units: int, n_layers: int) -> np.ndarray:
    """The stacked-LSTM forward pass of :class:`NumpyLSTM` for ``S`` models at once.

    ``blocks`` ``(S, D, 4W)`` are the models' block matrices, ``x`` ``(S, B, T, F)`` their
    scaled windows (``B`` per model); returns the last layer's final ``h``, ``(S, B, units)``.
    One model with a batch of windows (S = 1) and many models with one window each (B = 1, see
    :mod:`forecaster.batching`) are the same computation.
    """
    dtype = blocks.dtype.type
    s, batch, steps, n_feat = x.shape
    u, width = units, n_layers * units
    half = dtype(0.5)
    state = np.zeros((s, batch, width + 1 + n_feat), dtype=dtype)
    state[:, :, width] = 1.0  # feeds the bias row of the block matrix
    h, x_in = state[:, :, :width], state[:, :, width + 1 :]
    c = np.zeros((s, batch, width), dtype=dtype)
    tmp = np.empty_like(c)
    z = np.empty((s, batch, 4 * width), dtype=dtype)
    sig, i_g, f_g = z[..., : 3 * width], z[..., :width], z[..., width : 2 * width]
    o_g, c_g = z[..., 2 * width : 3 * width], z[..., 3 * width :]
    for k in range(steps + n_layers - 1):
        if k < steps:
            x_in[...] = x[:, :, k]
        elif k == steps:
            x_in[...] = 0.0  # past the window: layer 0's output is no longer read
        np.matmul(state, blocks, out=z)
        np.tanh(z, out=z)
        sig *= half
        sig += half
        c *= f_g
        np.multiply(i_g, c_g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(o_g, tmp, out=h)
        if k < n_layers - 1:
            h[..., (k + 1) * u :] = 0.0
            c[..., (k + 1) * u :] = 0.0
    return h[..., width - u :]


def _extract_numpy(model: keras.Model, dtype: type[np.floating[Any]]) -> NumpyLSTM:
    """Weights of a supported model for :class:`NumpyLSTM`; raise if the model is something else."""
    import keras

    lstm: list[tuple[np.ndarray, ...]] = []
    dense: tuple[np.ndarray, ...] | None = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.LSTM):
            cfg = layer.get_config()
            ok = (
                dense is None
                and cfg.get("activation") == "tanh"
                and cfg.get("recurrent_activation") == "sigmoid"
                and cfg.get("use_bias", True)
                and not cfg.get("go_backwards")
                and not cfg.get("stateful")
            )
            if not ok:
                raise ArtifactError(f"unsupported LSTM configuration in layer {layer.name!r}")
            lstm.append(tuple(np.asarray(w) for w in layer.get_weights()))
        elif isinstance(layer, keras.layers.Dropout):
            continue
        elif isinstance(layer, keras.layers.Dense) and dense is None:
            cfg = layer.get_config()
            linear = cfg.get("activation") == "linear" and cfg.get("use_bias")
            if cfg.get("units") != 1 or not linear:
                raise ArtifactError(f"unsupported output layer {layer.name!r}")
            dense = tuple(np.asarray(w) for w in layer.get_weights())
        else:
            raise ArtifactError(f"unsupported layer {layer.name!r} ({type(layer).__name__})")
    if not lstm or dense is None:
        raise ArtifactError("the model is not a stack of LSTMs ending in Dense(1)")
    return NumpyLSTM(lstm, dense, dtype)


def check_meta(meta: dict[str, Any]) -> tuple[Scaler, dict[str, Any]]:
    """Validate model metadata; return its scaler and architecture, or raise ArtifactError."""
    if not isinstance(meta, dict):
        raise ArtifactError("model metadata must be a JSON object")
    if meta.get("schema") != META_SCHEMA_VERSION or meta.get("kind") != META_KIND:
        raise ArtifactError(
            f"model metadata schema {meta.get('schema')!r}/{meta.get('kind')!r} is not "
            f"{META_SCHEMA_VERSION}/{META_KIND}"
        )
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise ArtifactError("model metadata has no architecture")
    feats = arch.get("features")
    if not isinstance(feats, list) or not feats or any(f not in FEATURE_NAMES for f in feats):
        raise ArtifactError(f"model features {feats!r} are not a subset of {FEATURE_NAMES}")
    window = arch.get("window")
    if not isinstance(window, int) or window < 2:
        raise ArtifactError(f"bad window {window!r} in model metadata")
    try:
        scaler = Scaler.from_json(meta.get("scaler") or {})
    except FeatureError as e:
        raise ArtifactError(str(e)) from None
    if list(scaler.features) != feats:
        raise ArtifactError(f"scaler features {list(scaler.features)} != model features {feats}")
    iv = meta.get("interval")
    if not isinstance(iv, dict):
        raise ArtifactError("model metadata has no interval")
    lo, hi, level = iv.get("q_low"), iv.get("q_high"), iv.get("level")
    nums = (lo, hi, level)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in nums):
        raise ArtifactError(f"bad interval {iv!r} in model metadata")
    assert isinstance(lo, int | float) and isinstance(hi, int | float)
    if lo > hi:
        raise ArtifactError(f"bad interval {iv!r} in model metadata")
    return scaler, arch


@dataclass(eq=False)
class LoadedModel:
    """A servable model: Keras model, its metadata, scaler and the numpy fast path."""

    model: keras.Model
    meta: dict[str, Any]
    scaler: Scaler
    window: int
    features: tuple[str, ...]
    q_low: float
    q_high: float
    interval_level: float
    net: NumpyLSTM

    # loading -------------------------------------------------------------------------------
    @classmethod
    def from_artifact(
        cls, artifact: bytes, meta: dict[str, Any], *, dtype: type[np.floating[Any]] = np.float32
    ) -> LoadedModel:
        """Load ``.keras`` bytes with ``safe_mode=True``; raise :class:`ArtifactError` if unfit.

        The metadata is checked first (schema, features, scaler, interval); when it records the
        artifact's sha256, the bytes must match it.
        """
        check_meta(meta)
        want = meta.get("artifact_sha256")
        if want is not None and hashlib.sha256(artifact).hexdigest() != want:
            raise ArtifactError("model artifact does not match the sha256 in its metadata")
        with tempfile.TemporaryDirectory(prefix="cryptocast-model-") as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(artifact)
            # A .keras file is a zip; anything else (an HDF5 or pickled file, garbage) is refused
            # before Keras sees it.
            if not zipfile.is_zipfile(path):
                raise ArtifactError("model artifact is not a .keras (zip) file")
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import keras

            try:
                model = keras.models.load_model(path, safe_mode=True, compile=False)
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
                raise ArtifactError(f"model artifact cannot be loaded: {why}") from e
        return cls.from_keras(model, meta, dtype=dtype)

    @classmethod
    def from_keras(
        cls, model: keras.Model, meta: dict[str, Any], *, dtype: type[np.floating[Any]] = np.float32
    ) -> LoadedModel:
        """Wrap an in-memory Keras model with its metadata (checked as in :meth:`from_artifact`)."""
        scaler, arch = check_meta(meta)
        window, n_feat = arch["window"], len(arch["features"])
        shape = tuple(model.input_shape)
        if shape[1:] != (window, n_feat):
            raise ArtifactError(f"model input shape {shape} != (None, {window}, {n_feat})")
        net = _extract_numpy(model, dtype)
        iv = meta["interval"]
        return cls(
            model=model,
            meta=meta,
            scaler=scaler,
            window=window,
            features=tuple(arch["features"]),
            q_low=float(iv["q_low"]),
            q_high=float(iv["q_high"]),
            interval_level=float(iv["level"]),
            net=net,
        )

    # identity ------------------------------------------------------------------------------
    @property
    def architecture(self) -> dict[str, Any]:
        """``units``, ``layers``, ``dropout``, ``window``, ``features`` from the metadata."""
        return dict(self.meta["architecture"])

    def matches(self, settings: ModelSettings) -> bool:
        """True when ``settings`` build a model whose weights this one's can seed (warm start)."""
        a = self.meta["architecture"]
        return (
            a.get("units") == settings.units
            and a.get("layers") == settings.layers
            and a.get("window") == settings.window
            and list(a.get("features", [])) == list(settings.features)
        )

    # scaled-space forward passes -------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Fast path: scaled windows ``(B, window, F)`` → scaled outputs ``(B,)`` (numpy)."""
        return self.net(x)

    def forward_model(self, x: np.ndarray) -> np.ndarray:
        """Reference: ``model(x)`` in Keras (eager call, no ``predict`` loop)."""
        return np.asarray(self.model(np.asarray(x, np.float32), training=False))[:, 0]

    def forward_keras(self, x: np.ndarray) -> np.ndarray:
        """Slow path: ``model.predict`` (the latency benchmark's baseline)."""
        return np.asarray(self.model.predict(np.asarray(x, np.float32), verbose=0))[:, 0]

    # raw candles in, prices out ----------------------------------------------------------------
    def prepare(self, recent: CandleArrays) -> tuple[np.ndarray, float]:
        """The scaled input window ``(1, T, F)`` and the last close, for :meth:`finish`."""
        return self._window(recent)

    def finish(self, z: float, last_close: float) -> Forecast:
        """Turn the network's scaled output into a :class:`Forecast` (price, interval)."""
        return self._forecast(z, last_close)

    def _window(self, recent: CandleArrays) -> tuple[np.ndarray, float]:
        feats = window_features(recent, self.window, self.features)
        return self.scaler.transform(feats)[None, :, :], float(recent.close[-1])

    def _forecast(self, z: float, last_close: float) -> Forecast:
        r = z * self.scaler.target_std + self.scaler.target_mean
        return Forecast(
            pred_return=r,
            pred_close=last_close * math.exp(r),
            lower=last_close * math.exp(r + self.q_low),
            upper=last_close * math.exp(r + self.q_high),
        )

    def predict_next(self, recent: CandleArrays) -> Forecast:
        """Forecast the candle after the last row of ``recent`` (fast numpy path).

        ``recent`` needs at least ``window + 1`` rows (only the last ``window + 1`` are read) with
        no hole among them; otherwise :class:`~forecaster.features.FeatureError` is raised.
        """
        x, last = self._window(recent)
        return self._forecast(float(self.net(x)[0]), last)

    def predict_keras(self, recent: CandleArrays) -> Forecast:
        """As :meth:`predict_next`, through ``model.predict`` (slow; the benchmark baseline)."""
        x, last = self._window(recent)
        return self._forecast(float(self.forward_keras(x)[0]), last)

    def predict_returns(
        self, arrays: CandleArrays, rows: np.ndarray, *, batch: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted log returns for target rows of ``arrays`` (batched fast path).

        Returns ``(pred, ok)``: ``ok`` is False (and ``pred`` NaN) for rows that have no full
        window for this model inside their segment.
        """
        rows = np.asarray(rows, dtype=np.int64)
        valid = target_rows(arrays, self.window)
        ok = np.isin(rows, valid)
        pred = np.full(rows.size, np.nan, dtype=np.float64)
        use = rows[ok]
        if use.size:
            # Only the rows the windows touch are featurised (and nothing after the last target).
            upto = arrays.slice(0, int(use.max()) + 1)
            scaled = self.scaler.transform(feature_matrix(upto, self.features))
            view = np.lib.stride_tricks.sliding_window_view(scaled, self.window, axis=0)
            out = np.empty(use.size, dtype=np.float64)
            for s in range(0, use.size, batch):
                part = use[s : s + batch]
                out[s : s + batch] = self.net(view[part - self.window].transpose(0, 2, 1))
            pred[ok] = self.scaler.inverse_target(out)
        return pred, ok
