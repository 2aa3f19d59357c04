"""Export a Keras model to LiteRT (``.tflite``) and ONNX, each checked by running it.

Both go through Keras' own ``model.export(path, format=...)`` (``"litert"``
uses TensorFlow's TFLite converter, ``"onnx"`` uses ``tf2onnx``); tfcustom adds
the check Keras leaves out: after writing a file it is loaded in its own
runtime (the LiteRT interpreter from ``ai-edge-litert``, ``onnxruntime``), run
on check images and compared with the Keras model's logits. The largest
absolute difference is returned, and an export whose arg-max differs from
Keras' on any image, or whose logits differ by more than ``tolerance``, is
refused (the file is deleted).

The runtimes are optional: ``pip install tfcustom[export]``. A missing one is
one error line naming the package.

>>> report = export_formats(model, "runs/cnn/export", ("litert", "onnx"), images)
>>> report["onnx"]["max_abs_diff"] < 1e-4
True
"""

from __future__ import annotations

import importlib
import os
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from tfcustom.errors import check, config_error

# format -> (file name, the Python modules it needs, the pip package that provides them)
FORMATS = {
    "litert": ("model.tflite", ("ai_edge_litert.interpreter",), "ai-edge-litert"),
    "onnx": ("model.onnx", ("onnx", "tf2onnx", "onnxruntime"), "onnx tf2onnx onnxruntime"),
}
DEFAULT_TOLERANCE = 1e-4  # float32 logits; measured max diffs on the shipped models are ~3e-6


def require_runtime(fmt: str) -> None:
    """Raise one [`ConfigError`][tfcustom.ConfigError] line naming the missing package for ``fmt``."""
    for module in FORMATS[fmt][1]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise config_error(f"exporting to {fmt} needs the Python package {module!r}, which is not installed",
                               fmt, f"pip install 'tfcustom[export]' (or: pip install {FORMATS[fmt][2]})") from None


def run_litert(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of the ``.tflite`` file at ``path`` on ``images`` (LiteRT interpreter)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(np.float32))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def run_onnx(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of the ``.onnx`` file at ``path`` on ``images`` (onnxruntime, CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0])


RUNNERS = {"litert": run_litert, "onnx": run_onnx}


def compare(fmt: str, path: str, model, images: np.ndarray, tolerance: float) -> Dict[str, float]:
    """Run the exported file and Keras on ``images``; refuse on any arg-max change or diff > ``tolerance``."""
    expected = np.asarray(tf.cast(model(images, training=False), tf.float32))
    got = RUNNERS[fmt](path, images)
    check(got.shape == expected.shape, f"the exported {fmt} model returns another shape than Keras", got.shape,
          "report this model: the export is not usable")
    diff = float(np.max(np.abs(got - expected)))
    agreement = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
    if agreement < 1.0 or not diff <= tolerance:
        raise config_error(f"the exported {fmt} model disagrees with Keras (max abs logit diff {diff:.3g}, "
                           f"arg-max agreement {agreement:.1%})", path, f"raise tolerance above {diff:.3g} or export without {fmt}")
    return {"path": path, "max_abs_diff": diff, "argmax_agreement": agreement, "bytes": os.path.getsize(path)}


def export_formats(model, directory: str, formats: Sequence[str], images: np.ndarray, *,
                   tolerance: float = DEFAULT_TOLERANCE) -> Dict[str, Dict[str, float]]:
    """Write ``model`` as ``<directory>/model.tflite`` / ``model.onnx`` for each of ``formats``
    and check each on ``images`` (float32, shape ``(n,) + input_shape``).

    Returns ``{format: {"path", "max_abs_diff", "argmax_agreement", "bytes"}}``.
    """
    check(getattr(model, "built", False), "export needs a built keras.Model", getattr(model, "name", type(model).__name__),
          "call the model on a batch (or train it) before exporting")
    unknown = [f for f in formats if f not in FORMATS]
    check(not unknown, "unknown export format", unknown, f"choose from {sorted(FORMATS)} (plus 'saved_model')")
    images = np.asarray(images, np.float32)
    check(images.ndim >= 2 and len(images) > 0, "export check images must be a non-empty batch", images.shape,
          "pass a few test images, shape (n, H, W, C)")
    for fmt in formats:
        require_runtime(fmt)
    spec = [tf.TensorSpec((None,) + images.shape[1:], tf.float32, name="images")]
    report = {}
    for fmt in formats:
        path = os.path.join(directory, FORMATS[fmt][0])
        tmp = os.path.join(directory, f".tmp-{os.getpid()}-{FORMATS[fmt][0]}")
        try:
            model.export(tmp, format=fmt, verbose=False, input_signature=spec)
            report[fmt] = compare(fmt, tmp, model, images, tolerance)
        except BaseException:
            if os.path.lexists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, path)
        report[fmt]["path"] = path
    return report
