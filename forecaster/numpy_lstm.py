"""The stacked-LSTM forward pass in numpy: what serving runs on every closed candle.

A Keras ``model.predict`` call costs milliseconds of framework overhead for a microsecond-sized
problem, so the weights are extracted once at load and the pass runs here, batched over windows
(training's holdout) or over models (:mod:`forecaster.serving.batching`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = ["ArtifactError", "NumpyLSTM", "extract_numpy", "keras_weights", "wavefront"]


# Weights in Keras's layout: per LSTM layer (kernel, recurrent kernel, bias); Dense (kernel, bias).
LstmWeights = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
DenseWeights = tuple[np.ndarray, np.ndarray]


class ArtifactError(ValueError):
    """A model artifact or its metadata that cannot be served (corrupt, foreign, mismatched)."""


class NumpyLSTM:
    """The forward pass of a stack of Keras LSTMs + Dense(k), in numpy, batched over windows.

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
        lstm_weights: Sequence[tuple[np.ndarray, ...]],
        dense: tuple[np.ndarray, ...],
        dtype: type[np.floating[Any]] = np.float32,
    ) -> None:
        units = {w[1].shape[0] for w in lstm_weights}
        if len(units) != 1:
            raise ArtifactError(f"LSTM layers of unequal widths {sorted(units)} are not supported")
        u = units.pop()
        n_layers = len(lstm_weights)
        n_feat = int(lstm_weights[0][0].shape[0])
        for li, (kernel, recurrent, bias) in enumerate(lstm_weights):
            fan_in = n_feat if li == 0 else u
            if (kernel.shape, recurrent.shape, bias.shape) != (
                (fan_in, 4 * u),
                (u, 4 * u),
                (4 * u,),
            ):
                raise ArtifactError(f"LSTM layer {li} weights have inconsistent shapes")
        if dense[0].ndim != 2 or dense[0].shape[0] != u or dense[1].shape != dense[0].shape[1:]:
            raise ArtifactError("output layer weights do not fit the last LSTM")
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
        self.dense_w = dense[0].astype(dtype)  # (U, k)
        self.dense_b = dense[1].astype(dtype)  # (k,)
        self.n_out = int(self.dense_w.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scaled windows ``(B, T, F)`` → raw outputs ``(B,)`` for Dense(1), else ``(B, k)``."""
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[2] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {x.shape[2]}")
        h = wavefront(self.block[None], x[None], self.units, self.n_layers)[0]
        out = h @ self.dense_w + self.dense_b
        return out[:, 0] if self.n_out == 1 else out


def wavefront(blocks: np.ndarray, x: np.ndarray, units: int, n_layers: int) -> np.ndarray:
    """The stacked-LSTM forward pass of :class:`NumpyLSTM` for ``S`` models at once.

    ``blocks`` ``(S, D, 4W)`` are the models' block matrices, ``x`` ``(S, B, T, F)`` their
    scaled windows (``B`` per model); returns the last layer's final ``h``, ``(S, B, units)``.
    One model with a batch of windows (S = 1) and many models with one window each (B = 1, see
    :mod:`forecaster.serving.batching`) are the same computation.
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


def extract_numpy(model: keras.Model, dtype: type[np.floating[Any]]) -> NumpyLSTM:
    """Weights of a supported model for :class:`NumpyLSTM`; raise if the model is something else."""
    lstm, dense = keras_weights(model)
    return NumpyLSTM(lstm, dense, dtype)


def keras_weights(model: keras.Model) -> tuple[LstmWeights, DenseWeights]:
    """The LSTM layers' ``(kernel, recurrent, bias)`` and the Dense ``(kernel, bias)`` of a
    supported model, in Keras's layout; raise :class:`ArtifactError` for anything else."""
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    lstm: LstmWeights = []
    dense: DenseWeights | None = None
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
            kernel, recurrent, bias = (np.asarray(w) for w in layer.get_weights())
            lstm.append((kernel, recurrent, bias))
        elif isinstance(layer, keras.layers.Dropout):
            continue
        elif isinstance(layer, keras.layers.Dense) and dense is None:
            cfg = layer.get_config()
            linear = cfg.get("activation") == "linear" and cfg.get("use_bias")
            if not linear:
                raise ArtifactError(f"unsupported output layer {layer.name!r}")
            d_kernel, d_bias = (np.asarray(w) for w in layer.get_weights())
            dense = (d_kernel, d_bias)
        else:
            raise ArtifactError(f"unsupported layer {layer.name!r} ({type(layer).__name__})")
    if not lstm or dense is None:
        raise ArtifactError("the model is not a stack of LSTMs ending in Dense(k)")
    return lstm, dense
