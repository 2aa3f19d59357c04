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
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check, config_error, is_writable_dir
from tfcustom.disk_errors import atomic, writing
from tfcustom.experiment.export_formats import FORMATS as EXTRA_FORMATS
from tfcustom.experiment.export_formats import export_formats, require_runtime
from tfcustom.experiment.prediction import (  # the prediction half of the export API, re-exported
    Predictor, class_names_for, load_predictor, model_input_shape, predict, read_idx_images, read_png_images,
)
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


def write_saved_model(model: keras.Model, path: str, input_shape: Sequence[int]) -> None:
    """Write ``model`` as a SavedModel at ``path`` with the ``serve`` and
    ``predict`` endpoints described in the module docstring (not atomic: see
    [`export_model`][tfcustom.experiment.export.export_model]).

    Args:
      model: a built Keras model returning logits.
      path: the SavedModel directory to write.
      input_shape: the per-example input shape of the endpoints' signature.

    Examples:
        >>> import tempfile
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> path = os.path.join(tempfile.mkdtemp(), "saved_model")
        >>> write_saved_model(model, path, input_shape=(2,))
        >>> reloaded = tf.saved_model.load(path)   # no Keras needed from here
        >>> sorted(reloaded.predict(tf.zeros((1, 2)))), reloaded.serve(tf.zeros((4, 2))).shape
        (['class_ids', 'logits', 'probabilities'], TensorShape([4, 3]))
    """
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

    Examples:
        >>> import tempfile
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> directory = tempfile.mkdtemp()
        >>> paths = export_model(model, directory, formats=())   # the .keras file only
        >>> sorted(paths), sorted(os.listdir(directory))
        (['keras'], ['model.keras'])
        >>> export_model(model, directory, formats=())
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: export path already exists ... Pass --overwrite (overwrite=True) to replace it, or export to another directory.
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
    shape = model_input_shape(model, input_shape)
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
