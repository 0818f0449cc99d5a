"""The numpy artifact: what serving loads, with no TensorFlow and nothing unpickled.

A trained model is stored twice in its registry version: the ``.keras`` file (for training's
warm start and the ``model.predict`` baseline) and this ``.npz``: the LSTM and Dense weights in
Keras's own layout plus, as a JSON document in a ``uint8`` array, the metadata serving needs
(architecture, scaler, interval and calibration, head parameters). ``np.load`` runs with
``allow_pickle=False``, so an object array is refused rather than unpickled, and every array must
be a finite float array of the shape the architecture implies. The registry checks the bytes
against their sha256 before this module sees them (docs/architecture.md, decision 11).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import orjson

from forecaster.numpy_lstm import ArtifactError, DenseWeights, LstmWeights

__all__ = ["NPZ_FORMAT", "SERVING_META_KEYS", "npz_bytes", "read_npz"]

NPZ_FORMAT = 1
# The metadata serving needs to rebuild a model from the .npz alone.
SERVING_META_KEYS = ("schema", "kind", "architecture", "scaler", "interval", "head_params", "point")
MAX_NPZ_BYTES = 256 << 20  # far above any supported model; refuses a decompression bomb early


def npz_bytes(lstm: LstmWeights, dense: DenseWeights, meta: dict[str, Any]) -> bytes:
    """The ``.npz`` of a model: Keras-layout weights and the serving part of ``meta``."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array([NPZ_FORMAT], dtype=np.int64),
        "layers": np.array([len(lstm)], dtype=np.int64),
        "meta_json": np.frombuffer(
            orjson.dumps({k: meta[k] for k in SERVING_META_KEYS if k in meta}), dtype=np.uint8
        ),
        "dense_kernel": np.asarray(dense[0], dtype=np.float32),
        "dense_bias": np.asarray(dense[1], dtype=np.float32),
    }
    for i, (kernel, recurrent, bias) in enumerate(lstm):
        arrays[f"lstm{i}_kernel"] = np.asarray(kernel, dtype=np.float32)
        arrays[f"lstm{i}_recurrent"] = np.asarray(recurrent, dtype=np.float32)
        arrays[f"lstm{i}_bias"] = np.asarray(bias, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def read_npz(data: bytes) -> tuple[LstmWeights, DenseWeights, dict[str, Any]]:
    """Weights and serving metadata of an ``.npz``; :class:`ArtifactError` when it is unfit."""
    if not data:
        raise ArtifactError("the model version has no numpy artifact (.npz)")
    if len(data) > MAX_NPZ_BYTES:
        raise ArtifactError(f"numpy artifact of {len(data)} bytes is larger than any model")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:  # numpy's refusal of an object (pickled) array lands here
        raise ArtifactError(f"numpy artifact refused: {e}") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"numpy artifact cannot be read: {type(e).__name__}: {e}") from None
    fmt, layers = arrays.get("format"), arrays.get("layers")
    if fmt is None or fmt.shape != (1,) or int(fmt[0]) != NPZ_FORMAT:
        raise ArtifactError(f"numpy artifact format {fmt!r} is not {NPZ_FORMAT}")
    if layers is None or layers.shape != (1,) or not 1 <= int(layers[0]) <= 8:
        raise ArtifactError(f"numpy artifact has a bad layer count {layers!r}")
    raw_meta = arrays.get("meta_json")
    if raw_meta is None or raw_meta.dtype != np.uint8 or raw_meta.ndim != 1:
        raise ArtifactError("numpy artifact has no metadata")
    try:
        meta = orjson.loads(raw_meta.tobytes())
    except orjson.JSONDecodeError as e:
        raise ArtifactError(f"numpy artifact metadata is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ArtifactError("numpy artifact metadata is not a JSON object")

    def weight(name: str, ndim: int) -> np.ndarray:
        a = arrays.get(name)
        if a is None or a.dtype.kind != "f" or a.ndim != ndim or not np.isfinite(a).all():
            raise ArtifactError(f"numpy artifact weight {name!r} is missing or not finite floats")
        return a

    lstm: LstmWeights = []
    for i in range(int(layers[0])):
        lstm.append(
            (
                weight(f"lstm{i}_kernel", 2),
                weight(f"lstm{i}_recurrent", 2),
                weight(f"lstm{i}_bias", 1),
            )
        )
    dense = (weight("dense_kernel", 2), weight("dense_bias", 1))
    return lstm, dense, meta
