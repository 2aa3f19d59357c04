"""Export a trained model, and use a run directory without training.

* [`export_model`][tfcustom.experiment.export.export_model] writes a model twice, **atomically**: as a ``.keras``
  file (reloads with ``keras.models.load_model`` after ``import tfcustom``,
  ``safe_mode`` on) and as a TensorFlow SavedModel with serving endpoints
  (reloads with ``tf.saved_model.load`` and needs neither Keras nor tfcustom).
* [`load_run_model`][tfcustom.experiment.export.load_run_model] / [`evaluate_run`][tfcustom.experiment.export.evaluate_run] rebuild a run directory's
  model (its final ``model.keras``, or its latest / best checkpoint) and
  evaluate it on a split.
* [`load_predictor`][tfcustom.experiment.export.load_predictor], [`read_png_images`][tfcustom.experiment.export.read_png_images], [`read_idx_images`][tfcustom.experiment.export.read_idx_images]
  and [`predict`][tfcustom.experiment.export.predict] classify images with an exported model.

The SavedModel's endpoints take **float32 images in [0, 1]** of shape
``(batch, H, W, C)`` (28x28x1 for Fashion-MNIST) and run the model with
``training=False``:

* ``serve(images)`` -> logits ``[batch, num_classes]`` (what Keras'
  ``model.export`` calls ``serve``);
* ``predict(images)`` -> ``{"logits", "probabilities", "class_ids"}``;
  it is also the ``serving_default`` signature (named outputs for TF Serving).

Examples:
    >>> paths = export_model(model, "runs/cnn/export", input_shape=(28, 28, 1))
    >>> reloaded = tf.saved_model.load(paths["saved_model"])
    >>> logits = reloaded.serve(images)                    # float32 in [0, 1]
    >>> evaluate_run("runs/cnn", "final")["accuracy"]
    0.91
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfcustom.data import read_idx
from tfcustom.data.sources import FASHION_MNIST_CLASSES
from tfcustom.errors import check, config_error, data_error, is_writable_dir
from tfcustom.disk_errors import atomic, writing
from tfcustom.experiment.export_formats import FORMATS as EXTRA_FORMATS
from tfcustom.experiment.export_formats import export_formats, require_runtime
from tfcustom.experiment.run_dir import (  # the run-directory half of the export API, re-exported
    load_keras, results_class_names, build_run_model, evaluate_run, find_checkpoint, load_run_model, restore_checkpoint,
)
from tfcustom.experiment.run_files import (
    BEST_SUBDIR, CHECKPOINT_CHOICES, CHECKPOINT_DIR, CONFIG_FILE, KERAS_FILE, RESULTS_FILE, SAVED_MODEL_DIR, SPLITS,
)

__all__ = [
    "CHECKPOINT_CHOICES", "SPLITS", "export_model", "write_saved_model", "load_run_model", "build_run_model",
    "restore_checkpoint", "find_checkpoint", "evaluate_run", "load_predictor", "Predictor",
    "read_png_images", "read_idx_images", "predict", "class_names_for",
    # the file names of a run directory (tfcustom.experiment.run_files; tfcustom.experiment.train, sweep and transfer read them from here)
    "BEST_SUBDIR", "CHECKPOINT_DIR", "CONFIG_FILE", "KERAS_FILE", "RESULTS_FILE", "SAVED_MODEL_DIR",
]


EXPORT_CHECK_FILE = "export_check.json"

# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------


def _model_input_shape(model: keras.Model, input_shape) -> tuple:
    """The per-example input shape: ``input_shape`` or the shape the model was built on."""
    if input_shape is not None:
        shape = tuple(input_shape)
        check(
            len(shape) >= 1 and all(isinstance(d, (int, np.integer)) and d > 0 for d in shape),
            "input_shape must be the per-example shape, e.g. (28, 28, 1)",
            input_shape,
            "pass the shape of one example without the batch dimension",
        )
        return tuple(int(d) for d in shape)
    build_config = model.get_build_config() if model.built else None
    shape = (build_config or {}).get("input_shape")
    check(
        shape is not None and not isinstance(shape, dict) and len(shape) >= 2 and all(d is not None for d in shape[1:]),
        "cannot tell the model's input shape (it was not built on a single fixed-shape input)",
        model.name,
        "build the model by calling it on a batch, or pass input_shape=(H, W, C)",
    )
    return tuple(int(d) for d in shape[1:])


def write_saved_model(model: keras.Model, path: str, input_shape: Sequence[int]) -> None:
    """Write ``model`` as a SavedModel at ``path`` with the ``serve`` and
    ``predict`` endpoints described in the module docstring (not atomic: see
    [`export_model`][tfcustom.experiment.export.export_model])."""
    spec = [tf.TensorSpec((None,) + tuple(input_shape), tf.float32, name="images")]

    def predict_fn(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    def serve_fn(images):
        return tf.cast(model(images, training=False), tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint is also published as "serving_default".
    archive.add_endpoint("predict", predict_fn, input_signature=spec)
    archive.add_endpoint("serve", serve_fn, input_signature=spec)
    archive.write_out(path, verbose=False)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.remove(path)
        except OSError:
            pass


def export_model(
    model: keras.Model,
    directory: str,
    *,
    overwrite: bool = False,
    keras_name: str = KERAS_FILE,
    savedmodel_name: str = SAVED_MODEL_DIR,
    input_shape: Optional[Sequence[int]] = None,
    formats: Sequence[str] = ("saved_model",),
    check_images: Optional[np.ndarray] = None,
) -> Dict[str, str]:
    """Write ``model`` as ``<directory>/<keras_name>`` and ``<directory>/<savedmodel_name>/``.

    Both are first written to temporary siblings (``<directory>/.tmp-*``) and
    renamed into place only when both are complete, so an interrupted or
    failed export never leaves a partial file at the final paths (and, with
    ``overwrite``, the previous export stays until the new one is complete).

    Args:
      model: a built Keras model returning logits.
      directory: where to write (created if needed).
      overwrite: replace existing exports; without it an existing final path
        raises [`ConfigError`][tfcustom.ConfigError] and nothing is written.
      keras_name: file name of the ``.keras`` file (must end in ``.keras``).
      savedmodel_name: directory name of the SavedModel.
      input_shape: per-example input shape of the serving signature, e.g.
        ``(28, 28, 1)``; by default the shape the model was built on.
      formats: besides the ``.keras`` file, any of ``"saved_model"``,
        ``"litert"`` (``model.tflite``) and ``"onnx"`` (``model.onnx``); the
        last two are run on ``check_images`` and compared with Keras (see
        `tfcustom.experiment.export_formats`), their report written to
        ``<directory>/export_check.json``.
      check_images: float32 images for that check; by default 16 seeded
        uniform [0, 1] images of ``input_shape``.

    Returns:
      ``{"keras": <path>, "saved_model": <path>, ...}`` (one entry per format written).
    """
    formats = tuple(formats)
    shape, extra = _check_export_args(model, directory, keras_name, savedmodel_name, input_shape, formats)
    directory = os.fspath(directory)
    finals = {"keras": os.path.join(directory, keras_name)}
    if "saved_model" in formats:
        finals["saved_model"] = os.path.join(directory, savedmodel_name)
    checked = [os.path.join(directory, EXTRA_FORMATS[f][0]) for f in extra]
    existing = [p for p in list(finals.values()) + checked if os.path.lexists(p)]
    if existing and not overwrite:
        raise config_error("export path already exists", existing[0] if len(existing) == 1 else existing,
                           "pass --overwrite (overwrite=True) to replace it, or export to another directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise config_error(f"cannot create the export directory ({e.strerror})", directory, "choose a writable directory") from None
    check(is_writable_dir(directory), "export directory is not writable", directory, "choose a writable directory")
    _write_in_place(model, directory, finals, shape)
    if extra:
        finals.update(_export_checked(model, directory, extra, shape, check_images))
    return dict(finals)


def _check_export_args(model, directory, keras_name, savedmodel_name, input_shape, formats):
    """``(per-example input shape, formats besides saved_model)``, every argument checked before anything is written."""
    check(isinstance(model, keras.Model) and model.built, "export needs a built keras.Model", getattr(model, "name", type(model).__name__),
          "call the model on a batch (or train it) before exporting")
    check(isinstance(keras_name, str) and keras_name.endswith(".keras") and os.path.basename(keras_name) == keras_name,
          "keras_name must be a file name ending in .keras", keras_name, "pass e.g. keras_name='model.keras'")
    check(isinstance(savedmodel_name, str) and savedmodel_name and os.path.basename(savedmodel_name) == savedmodel_name,
          "savedmodel_name must be a plain directory name", savedmodel_name, "pass e.g. savedmodel_name='saved_model'")
    shape = _model_input_shape(model, input_shape)
    extra = [f for f in formats if f != "saved_model"]
    check(all(f in EXTRA_FORMATS for f in extra), "unknown export format", formats,
          f"choose from {['saved_model'] + sorted(EXTRA_FORMATS)}")
    for fmt in extra:
        require_runtime(fmt)
    directory = os.fspath(directory)
    check(not os.path.exists(directory) or os.path.isdir(directory), "export directory exists and is not a directory", directory,
          "pass a directory path")
    return shape, extra


def _write_in_place(model, directory: str, finals: Dict[str, str], shape) -> None:
    """Write the ``.keras`` file (and the SavedModel) to temporary siblings, then rename them to ``finals``."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = {k: os.path.join(directory, f".tmp-{token}-{os.path.basename(p)}") for k, p in finals.items()}
    try:
        with writing(f"the exported model ({', '.join(os.path.basename(p) for p in finals.values())})", directory):
            model.save(tmp["keras"])
            if "saved_model" in tmp:
                write_saved_model(model, tmp["saved_model"], shape)
    except BaseException:
        for p in tmp.values():
            _remove(p)
        raise

    # Both artifacts are complete: move them into place. A file is replaced
    # atomically by os.replace; a directory cannot be, so the old one is moved
    # aside first and deleted only once the new one is in place.
    for key in finals:
        final, new = finals[key], tmp[key]
        old = None
        if os.path.lexists(final) and (os.path.isdir(final) and not os.path.islink(final)):
            old = os.path.join(directory, f".old-{token}-{os.path.basename(final)}")
            os.replace(final, old)
        try:
            os.replace(new, final)
        except BaseException:
            if old is not None and not os.path.lexists(final):
                os.replace(old, final)
            for p in tmp.values():
                _remove(p)
            raise
        if old is not None:
            _remove(old)


def _export_checked(model, directory, formats, shape, images) -> Dict[str, str]:
    """LiteRT / ONNX files, each run and compared with Keras; the report goes to ``export_check.json``."""
    if images is None:
        images = np.random.default_rng(0).uniform(0.0, 1.0, (16,) + tuple(shape)).astype(np.float32)
    report = export_formats(model, directory, formats, images)
    with atomic(os.path.join(directory, EXPORT_CHECK_FILE)) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    return {fmt: entry["path"] for fmt, entry in report.items()}


# --------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------


class Predictor:
    """A loaded model: ``predictor(images)`` -> logits (NumPy), plus its
    ``input_shape`` (per example), ``class_names`` and ``kind``."""

    def __init__(self, fn, input_shape, class_names, kind):
        self._fn = fn
        self.input_shape = tuple(input_shape)
        self.class_names = list(class_names) if class_names else None
        self.kind = kind

    def __call__(self, images) -> np.ndarray:
        return np.asarray(self._fn(tf.convert_to_tensor(np.asarray(images, np.float32))))


def class_names_for(model_path: str, num_classes: int):
    """Class names for a model: the ``class_names`` of the results.json next
    to it (its run directory) when there is one, else Fashion-MNIST's for 10
    classes, else the class ids as strings."""
    parent = os.path.dirname(os.path.abspath(model_path.rstrip("/")))
    names = results_class_names(parent)
    if names and len(names) == num_classes:
        return names
    if num_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(num_classes)]


def load_predictor(path: str) -> Predictor:
    """Load a ``.keras`` file or a SavedModel directory written by [`export_model`][tfcustom.experiment.export.export_model]."""
    check(os.path.exists(path), "model path does not exist", path, "pass a .keras file or a SavedModel directory")
    if os.path.isdir(path):
        check(os.path.isfile(os.path.join(path, "saved_model.pb")), "directory is not a SavedModel (no saved_model.pb)", path,
              "pass a .keras file or the saved_model/ directory of a run")
        try:
            loaded = tf.saved_model.load(path)
        except Exception as e:
            raise config_error(f"cannot load the SavedModel ({type(e).__name__})", path, "pass a SavedModel written by tfcustom.experiment.export") from None
        check(hasattr(loaded, "serve"), "SavedModel has no serve() endpoint", path, "export it with tfcustom.experiment.export.export_model or model.export")
        spec = loaded.serve.concrete_functions[0].structured_input_signature[0][0]
        shape = tuple(spec.shape[1:])
        probe = loaded.serve(tf.zeros((1,) + shape, tf.float32))
        num_classes = int(probe.shape[-1])
        return Predictor(lambda x: loaded.serve(x).numpy(), shape, class_names_for(path, num_classes), "saved_model")
    check(path.endswith(".keras"), "model file must be a .keras file", path, "pass a .keras file or a SavedModel directory")
    model = load_keras(path)
    shape = _model_input_shape(model, None)
    num_classes = int(model(tf.zeros((1,) + shape, tf.float32), training=False).shape[-1])
    return Predictor(lambda x: model(x, training=False).numpy(), shape, class_names_for(path, num_classes), "keras")


def read_png_images(paths: Sequence[str], size=(28, 28), channels: int = 1) -> np.ndarray:
    """PNG files -> float32 array ``(N, H, W, channels)`` in [0, 1].

    Colour images are converted to grey (``channels=1``), alpha is dropped,
    other sizes are resized (area-averaged) to ``size``. 16-bit PNGs are
    scaled by 65535. Fashion-MNIST images are light garments on a black
    background; photos of dark objects on white need inverting first.
    """
    check(len(paths) > 0, "no images given", list(paths), "pass one or more PNG files")
    out = []
    for p in paths:
        if not os.path.isfile(p):
            raise data_error("image file not found", p, "check the path")
        try:
            raw = tf.io.read_file(p)
            dtype = tf.uint16 if _png_bit_depth(p) == 16 else tf.uint8
            img = tf.io.decode_png(raw, channels=channels, dtype=dtype)
        except tf.errors.OpError as e:
            raise data_error(f"cannot decode the PNG ({e.message.splitlines()[0][:120]})", p, "pass a valid PNG image") from None
        img = tf.cast(img, tf.float32) / float(dtype.max)
        if tuple(img.shape[:2]) != tuple(size):
            img = tf.image.resize(img, size, method="area")
        out.append(tf.clip_by_value(img, 0.0, 1.0).numpy())
    return np.stack(out).astype(np.float32)


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) < 25 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise data_error("file is not a PNG image", path, "pass PNG files (or IDX files with --idx)")
    return head[24]


def read_idx_images(path: str, limit: Optional[int] = None) -> np.ndarray:
    """An IDX image file -> float32 ``(N, H, W, 1)`` in [0, 1] (the first ``limit``)."""
    x = read_idx(path)
    if x.ndim not in (3, 4):
        raise data_error("IDX file does not hold images (expected 3 dimensions)", x.shape, "pass an images file, e.g. t10k-images-idx3-ubyte.gz")
    if limit is not None:
        check(isinstance(limit, int) and limit >= 1, "limit must be a positive integer", limit, "pass e.g. --limit=10")
        x = x[:limit]
    if x.ndim == 3:
        x = x[..., None]
    if np.issubdtype(x.dtype, np.integer):
        return (x.astype(np.float32) / 255.0)
    return x.astype(np.float32)


def predict(predictor: Predictor, images: np.ndarray) -> Dict[str, Any]:
    """Classify ``images`` (float32 in [0, 1]) -> ``{"class_ids", "class_names", "probabilities", "logits"}``."""
    images = np.asarray(images, np.float32)
    if tuple(images.shape[1:]) != predictor.input_shape:
        raise data_error("images do not have the model's input shape", tuple(images.shape[1:]),
                         f"pass images of shape {predictor.input_shape}")
    logits = predictor(images)
    probs = tf.nn.softmax(logits, axis=-1).numpy()
    ids = probs.argmax(-1)
    names = predictor.class_names or [str(i) for i in range(probs.shape[-1])]
    return {"class_ids": ids, "class_names": [names[i] for i in ids], "probabilities": probs, "logits": logits}
