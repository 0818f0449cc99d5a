"""The Keras model: a stack of LSTMs over a window of scaled features, a distribution head out.

The head is a linear ``Dense(k)`` of raw outputs in the scaled target space (see
:mod:`forecaster.heads` for what they mean): ``mse`` has one (the point), ``gaussian`` two
(location, raw scale) and ``student_t`` three (location, raw scale, raw degrees of freedom). The
positivity transforms (softplus + floor) are applied in the loss and, identically, in numpy by
:mod:`forecaster.heads`, so the saved model is a plain Sequential of built-in layers that Keras's
safe mode loads without custom code. Trained by negative log-likelihood (MSE for ``mse``).

TensorFlow is imported lazily (inside functions) so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from config.settings import ModelSettings
from forecaster.heads import DF_MIN, SCALE_FLOOR, head_outputs

if TYPE_CHECKING:
    import keras

__all__ = ["build_model", "configure_tensorflow", "nll_loss", "set_seed", "stop_callback"]

log = structlog.get_logger(__name__)

_configured_threads: int | None = None


def configure_tensorflow(threads: int) -> None:
    """Bound TensorFlow's thread pools; call once per process before building any model.

    TensorFlow fixes its pools when its runtime starts, so a later call with another value cannot
    take effect: it is logged and ignored rather than failing a training run.
    """
    global _configured_threads  # noqa: PLW0603 - process-wide runtime state, set once
    if _configured_threads == threads:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow loads only in training processes)

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        _configured_threads = threads
    except RuntimeError:
        log.warning(
            "tensorflow_threads_already_set",
            wanted=threads,
            intra=tf.config.threading.get_intra_op_parallelism_threads(),
            inter=tf.config.threading.get_inter_op_parallelism_threads(),
        )


def set_seed(seed: int) -> None:
    """Seed Python, numpy and the backend so weight init and shuffling are reproducible."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    keras.utils.set_random_seed(seed)


def build_model(n_features: int, settings: ModelSettings) -> keras.Model:
    """The seed architecture, generalised to ``settings.layers`` LSTMs.

    ``layers=2`` (the default) is LSTM(units, return_sequences) → Dropout → LSTM(units) →
    Dense(k) (k from ``settings.head``): dropout follows every LSTM but the last.
    Adam(learning_rate); loss: the head's negative log-likelihood, or MSE for ``mse``.
    Weight init is seeded from ``settings.seed``. TensorFlow's thread pools are bounded to
    ``settings.threads`` first unless the process already did (:func:`configure_tensorflow`).
    """
    if _configured_threads is None:
        configure_tensorflow(settings.threads)
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    set_seed(settings.seed)
    stack: list[Any] = [keras.Input(shape=(settings.window, n_features), name="window")]
    for i in range(settings.layers):
        last = i == settings.layers - 1
        stack.append(keras.layers.LSTM(settings.units, return_sequences=not last, name=f"lstm_{i}"))
        if not last and settings.dropout > 0:
            stack.append(keras.layers.Dropout(settings.dropout, name=f"dropout_{i}"))
    stack.append(keras.layers.Dense(head_outputs(settings.head), name="out"))
    model = keras.Sequential(stack, name="cryptocast_lstm")
    loss: Any = "mse" if settings.head == "mse" else nll_loss(settings.head)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss=loss)
    return model


def stop_callback(stop: threading.Event) -> keras.callbacks.Callback:
    """A Keras callback that ends ``fit`` after the batch during which ``stop`` was set: an
    epoch of a real model takes minutes, too long to wait for once the run must end."""
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)

    class StopOnEvent(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if stop.is_set():
                self.model.stop_training = True

    return StopOnEvent()


def nll_loss(head: str) -> Any:
    """The mean negative log-likelihood of scaled targets under the head's distribution."""
    import keras  # noqa: PLC0415 (Keras loads only where a model is built or read)
    from keras import ops  # noqa: PLC0415 (Keras loads only where a model is built or read)

    half_log_2pi = 0.5 * math.log(2.0 * math.pi)

    def gaussian_nll(y_true: Any, y_pred: Any) -> Any:
        y = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1,))
        loc, scale = y_pred[:, 0], ops.softplus(y_pred[:, 1]) + SCALE_FLOOR
        z = (y - loc) / scale
        return ops.mean(half_log_2pi + ops.log(scale) + 0.5 * z * z)

    def student_t_nll(y_true: Any, y_pred: Any) -> Any:
        y = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1,))
        loc, scale = y_pred[:, 0], ops.softplus(y_pred[:, 1]) + SCALE_FLOOR
        df = ops.softplus(y_pred[:, 2]) + DF_MIN
        z = (y - loc) / scale
        log_norm = _lgamma((df + 1.0) / 2.0) - _lgamma(df / 2.0) - 0.5 * ops.log(math.pi * df)
        return ops.mean(ops.log(scale) - log_norm + (df + 1.0) / 2.0 * ops.log1p(z * z / df))

    fn = gaussian_nll if head == "gaussian" else student_t_nll
    # Registered so a compiled model saves cleanly; serving loads with compile=False anyway.
    return keras.saving.register_keras_serializable(package="cryptocast")(fn)


def _lgamma(x: Any) -> Any:
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow loads only in training processes)

    return tf.math.lgamma(x)


def model_forward(model: Any, x: np.ndarray) -> np.ndarray:
    """The Keras model's first output on ``x`` (the point, in scaled units)."""
    out = np.asarray(model(np.asarray(x, np.float32), training=False))
    return out[:, 0]


def save_keras(model: Any) -> bytes:
    """The model as ``.keras`` file bytes (what the registry stores)."""
    with tempfile.TemporaryDirectory(prefix="cryptocast-train-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()
