"""Export a trained model, and use a run directory without training.

* :func:`export_model` writes a model twice, **atomically**: as a ``.keras``
  file (reloads with ``keras.models.load_model`` after ``import tfcustom``,
  ``safe_mode`` on) and as a TensorFlow SavedModel with serving endpoints
  (reloads with ``tf.saved_model.load`` and needs neither Keras nor tfcustom).
* :func:`load_run_model` / :func:`evaluate_run` rebuild a run directory's
  model (its final ``model.keras``, or its latest / best checkpoint) and
  evaluate it on a split.
* :func:`load_predictor`, :func:`read_png_images`, :func:`read_idx_images`
  and :func:`predict` classify images with an exported model.

The SavedModel's endpoints take **float32 images in [0, 1]** of shape
``(batch, H, W, C)`` (28x28x1 for Fashion-MNIST) and run the model with
``training=False``:

* ``serve(images)`` -> logits ``[batch, num_classes]`` (what Keras'
  ``model.export`` calls ``serve``);
* ``predict(images)`` -> ``{"logits", "probabilities", "class_ids"}``;
  it is also the ``serving_default`` signature (named outputs for TF Serving).

Example:

>>> paths = export_model(model, "runs/cnn/export", input_shape=(28, 28, 1))
>>> reloaded = tf.saved_model.load(paths["saved_model"])
>>> logits = reloaded.serve(images)                    # float32 in [0, 1]
>>> evaluate_run("runs/cnn", "final")["accuracy"]
0.91
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check, check_one_of, config_error, data_error, is_writable_dir

__all__ = [
    "CHECKPOINT_CHOICES", "SPLITS", "export_model", "write_saved_model", "load_run_model",
    "restore_checkpoint", "find_checkpoint", "evaluate_run", "load_predictor", "Predictor",
    "read_png_images", "read_idx_images", "predict", "class_names_for",
]

CHECKPOINT_CHOICES = ("final", "latest", "best")
SPLITS = ("test", "validation", "train")
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CHECKPOINT_DIR = "checkpoints"
BEST_SUBDIR = "best"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"  # written last: a run directory is finished iff it exists


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
    :func:`export_model`)."""
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
        raises :class:`ConfigError` and nothing is written.
      keras_name: file name of the ``.keras`` file (must end in ``.keras``).
      savedmodel_name: directory name of the SavedModel.
      input_shape: per-example input shape of the serving signature, e.g.
        ``(28, 28, 1)``; by default the shape the model was built on.

    Returns:
      ``{"keras": <path>, "saved_model": <path>}``.
    """
    check(isinstance(model, keras.Model) and model.built, "export needs a built keras.Model", getattr(model, "name", type(model).__name__),
          "call the model on a batch (or train it) before exporting")
    check(isinstance(keras_name, str) and keras_name.endswith(".keras") and os.path.basename(keras_name) == keras_name,
          "keras_name must be a file name ending in .keras", keras_name, "pass e.g. keras_name='model.keras'")
    check(isinstance(savedmodel_name, str) and savedmodel_name and os.path.basename(savedmodel_name) == savedmodel_name,
          "savedmodel_name must be a plain directory name", savedmodel_name, "pass e.g. savedmodel_name='saved_model'")
    shape = _model_input_shape(model, input_shape)
    directory = os.fspath(directory)
    check(not os.path.exists(directory) or os.path.isdir(directory), "export directory exists and is not a directory", directory,
          "pass a directory path")
    finals = {"keras": os.path.join(directory, keras_name), "saved_model": os.path.join(directory, savedmodel_name)}
    existing = [p for p in finals.values() if os.path.lexists(p)]
    if existing and not overwrite:
        raise config_error("export path already exists", existing[0] if len(existing) == 1 else existing,
                           "pass --overwrite (overwrite=True) to replace it, or export to another directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise config_error(f"cannot create the export directory ({e.strerror})", directory, "choose a writable directory") from None
    check(is_writable_dir(directory), "export directory is not writable", directory, "choose a writable directory")

    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = {k: os.path.join(directory, f".tmp-{token}-{os.path.basename(p)}") for k, p in finals.items()}
    try:
        model.save(tmp["keras"])
        write_saved_model(model, tmp["saved_model"], shape)
    except BaseException:
        for p in tmp.values():
            _remove(p)
        raise

    # Both artifacts are complete: move them into place. A file is replaced
    # atomically by os.replace; a directory cannot be, so the old one is moved
    # aside first and deleted only once the new one is in place.
    for key in ("keras", "saved_model"):
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
    return dict(finals)


# --------------------------------------------------------------------------
# run directories: rebuild a model, evaluate it
# --------------------------------------------------------------------------


def _read_run_config(run_dir: str):
    from tfcustom.config import TrainConfig

    check(os.path.isdir(run_dir), "run directory does not exist", run_dir, "pass the --output_dir of a training run")
    path = os.path.join(run_dir, CONFIG_FILE)
    check(os.path.isfile(path), "run directory has no config.json (not a tfcustom run)", run_dir,
          "pass the --output_dir of a training run")
    return TrainConfig.read(path)


def find_checkpoint(run_dir: str, which: str) -> str:
    """The checkpoint path of ``which`` (``latest`` or ``best``) in ``run_dir``.

    ``latest`` is the newest checkpoint of ``<run_dir>/checkpoints``
    (``tf.train.latest_checkpoint``), ``best`` the newest of
    ``<run_dir>/checkpoints/best``.
    """
    check_one_of("checkpoint", which, ("latest", "best"))
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    if which == "best":
        directory = os.path.join(directory, BEST_SUBDIR)
    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    check(path is not None, f"run has no {which} checkpoint", directory,
          "train with checkpoints enabled, or pass --checkpoint=final to use the run's model.keras")
    return path


def _untracked_weights(model: keras.Model, checkpoint: tf.train.Checkpoint):
    tracked = {id(t) for t in tf.train.TrackableView(checkpoint).descendants()}
    # A Keras variable counts as tracked when it, or the tf.Variable it wraps, is.
    return [w.path for w in model.weights
            if not any(id(v) in tracked for v in (w, getattr(w, "_value", None)) if v is not None)]


def restore_checkpoint(model: keras.Model, path: str) -> None:
    """Restore ``model`` (built) from a training or model checkpoint at ``path``
    (``tfcustom.checkpoint.model_checkpoint(model).restore(path).expect_partial()``).

    Everything else in the checkpoint (optimizer, step counters, ...) is
    ignored. Raises :class:`ConfigError` if the checkpoint does not hold this
    model, or if some of the model's weights are invisible to
    ``tf.train.Checkpoint`` (they would silently keep their initial values).
    """
    try:  # the run's own layout: the model plus an explicit map of its variables
        from tfcustom.checkpoint import model_checkpoint
    except ImportError:  # pragma: no cover
        model_checkpoint = lambda m: tf.train.Checkpoint(model=m)  # noqa: E731
    checkpoint = model_checkpoint(model)
    untracked = _untracked_weights(model, checkpoint)
    check(not untracked, f"{len(untracked)} weight(s) of the model are not tracked by tf.train.Checkpoint, so a checkpoint cannot restore them",
          untracked[:3], "restore from the run's model.keras (--checkpoint=final), or make the model track these layers")
    try:
        status = checkpoint.restore(path).expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise config_error(f"checkpoint does not hold this run's model ({str(e).splitlines()[0][:200]})", path,
                           "pass the checkpoint of this run, or a run directory whose config.json matches it") from None
    except (tf.errors.OpError, OSError) as e:
        raise config_error(f"checkpoint cannot be read ({type(e).__name__})", path, "the file is corrupt or truncated; use another checkpoint") from None


def load_run_model(run_dir: str, which: str = "final", *, num_classes: Optional[int] = None, input_shape=None) -> keras.Model:
    """The model of a run directory.

    ``which="final"``: ``<run_dir>/model.keras`` (``safe_mode=True``).
    ``which="latest"`` / ``"best"``: the model rebuilt from
    ``<run_dir>/config.json`` and restored from the newest checkpoint of
    ``<run_dir>/checkpoints`` / ``<run_dir>/checkpoints/best`` (see
    :func:`find_checkpoint`). ``num_classes`` and ``input_shape`` (per
    example) build it; by default from the run's results.json (class count)
    and (28, 28, 1).
    """
    check_one_of("checkpoint", which, CHECKPOINT_CHOICES)
    config = _read_run_config(run_dir)
    if which == "final":
        path = os.path.join(run_dir, KERAS_FILE)
        check(os.path.isfile(path), "run directory has no model.keras (training did not finish)", run_dir,
              "pass --checkpoint=latest to use its newest checkpoint, or finish the run")
        return _load_keras(path)
    path = find_checkpoint(run_dir, which)
    if num_classes is None:
        names = _results_class_names(run_dir)
        num_classes = len(names) if names else 10
    model = build_run_model(config, num_classes, input_shape or (28, 28, 1))
    restore_checkpoint(model, path)
    return model


def _default_name(cls) -> str:
    # Keras' automatic name of the first instance of a class ("CNN" -> "cnn",
    # "ResNet" -> "res_net"): what the model of a fresh training process is called.
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls.__name__)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def build_run_model(config, num_classes: int, input_shape=(28, 28, 1)) -> keras.Model:
    """The run's model, freshly built from its config (named as in a fresh
    training process, whatever models this process built before)."""
    from tfcustom import models as models_lib

    kwargs = dict(config.model_kwargs)
    cls = models_lib._REGISTRY.get(str(config.model).lower())
    if cls is not None:
        kwargs.setdefault("name", _default_name(cls))
    model = models_lib.get(config.model, num_classes=num_classes, **kwargs)
    model(tf.zeros((1,) + tuple(input_shape), tf.float32), training=False)
    return model


def _load_keras(path: str) -> keras.Model:
    import tfcustom  # noqa: F401  (registers the custom objects for safe_mode loading)

    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as e:  # zip / h5 / deserialization errors
        raise config_error(f"cannot load the .keras file ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})", path,
                           "pass a .keras file written by tfcustom (or keras.Model.save)") from None


def _results_class_names(run_dir: str):
    path = os.path.join(run_dir, RESULTS_FILE)
    try:
        with open(path) as f:
            names = json.load(f).get("class_names")
        return list(names) if names else None
    except (OSError, ValueError, AttributeError):
        return None


def evaluate_run(run_dir: str, which: str = "final", data_dir: Optional[str] = None, split: str = "test",
                 *, dataset=None) -> Dict[str, float]:
    """Evaluate a run's model on a split, without training.

    Args:
      run_dir: a training run's output directory (has ``config.json``).
      which: ``"final"`` (``model.keras``), ``"latest"`` or ``"best"``
        (checkpoints; see :func:`load_run_model`).
      data_dir: the data directory (default: the run's ``data_dir``).
      split: ``"test"``, ``"validation"`` (the run's held-out part of train,
        rebuilt from its seed and validation_size) or ``"train"`` (the rest).
      dataset: an in-memory :class:`tfcustom.data.Dataset` instead of loading
        the run's dataset.

    Returns:
      ``{"loss": ..., <metric>: ...}`` with the run's loss and metrics, over
      every example of the split; also ``"examples"`` (the count).
    """
    from tfcustom import data as data_lib
    from tfcustom import steps as steps_lib
    from tfcustom.train import build_loss
    from tfcustom.trainer import _metric_from_spec, _scalar_results

    check_one_of("split", split, SPLITS)
    config = _read_run_config(run_dir)
    check_one_of("checkpoint", which, CHECKPOINT_CHOICES)
    if dataset is None:
        dataset = data_lib.load(config.dataset, data_dir or config.data_dir)
    if split == "test":
        examples = dataset.test
    else:
        train, val = data_lib.split_validation(dataset.train, config.validation_size, config.seed)
        check(split == "train" or val is not None, "the run used no validation split", config.validation_size, "evaluate --split=test or train")
        examples = train if split == "train" else val
    model = load_run_model(run_dir, which, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
    out_dim = int(model(tf.zeros((1,) + tuple(dataset.input_shape), tf.float32), training=False).shape[-1])
    if out_dim != dataset.num_classes:
        raise data_error("the model's number of outputs differs from the dataset's number of classes", (out_dim, dataset.num_classes),
                         "evaluate on the dataset the run was trained on")
    loss = build_loss(config)
    metrics = [_metric_from_spec(m, dataset.num_classes) for m in config.metrics]
    tracker = keras.metrics.Mean(name="loss")
    test_loop = steps_lib.make_test_step(model, loss, metrics, loss_tracker=tracker)
    pipe = data_lib.InputPipeline(examples, min(config.eval_batch_size, len(examples)))
    test_loop(iter(pipe.dataset()))
    logs = {"loss": float(tracker.result())}
    for m in metrics:
        logs.update(_scalar_results(m))
    logs["examples"] = len(examples)
    return logs


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
    from tfcustom.data.sources import FASHION_MNIST_CLASSES

    parent = os.path.dirname(os.path.abspath(model_path.rstrip("/")))
    names = _results_class_names(parent)
    if names and len(names) == num_classes:
        return names
    if num_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(num_classes)]


def load_predictor(path: str) -> Predictor:
    """Load a ``.keras`` file or a SavedModel directory written by :func:`export_model`."""
    check(os.path.exists(path), "model path does not exist", path, "pass a .keras file or a SavedModel directory")
    if os.path.isdir(path):
        check(os.path.isfile(os.path.join(path, "saved_model.pb")), "directory is not a SavedModel (no saved_model.pb)", path,
              "pass a .keras file or the saved_model/ directory of a run")
        try:
            loaded = tf.saved_model.load(path)
        except Exception as e:
            raise config_error(f"cannot load the SavedModel ({type(e).__name__})", path, "pass a SavedModel written by tfcustom.export") from None
        check(hasattr(loaded, "serve"), "SavedModel has no serve() endpoint", path, "export it with tfcustom.export.export_model or model.export")
        spec = loaded.serve.concrete_functions[0].structured_input_signature[0][0]
        shape = tuple(spec.shape[1:])
        probe = loaded.serve(tf.zeros((1,) + shape, tf.float32))
        num_classes = int(probe.shape[-1])
        return Predictor(lambda x: loaded.serve(x).numpy(), shape, class_names_for(path, num_classes), "saved_model")
    check(path.endswith(".keras"), "model file must be a .keras file", path, "pass a .keras file or a SavedModel directory")
    model = _load_keras(path)
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
    from tfcustom.data import read_idx

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
