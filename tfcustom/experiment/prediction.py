"""Classify images with an exported model: load it, read the images, predict.

[`load_predictor`][tfcustom.experiment.export.load_predictor] loads a ``.keras`` file or a SavedModel written by
[`export_model`][tfcustom.experiment.export.export_model]; [`read_png_images`][tfcustom.experiment.export.read_png_images] and
[`read_idx_images`][tfcustom.experiment.export.read_idx_images] give float32 images in [0, 1];
[`predict`][tfcustom.experiment.export.predict] classifies them. Re-exported by
[`tfcustom.experiment.export`][tfcustom.experiment.export].
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfcustom.data import read_idx
from tfcustom.data.sources import FASHION_MNIST_CLASSES
from tfcustom.errors import check, config_error, data_error
from tfcustom.experiment.run_dir import load_keras, results_class_names


def model_input_shape(model: keras.Model, input_shape) -> tuple:
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


class Predictor:
    """A loaded model: ``predictor(images)`` -> logits (NumPy), plus its
    ``input_shape`` (per example), ``class_names`` and ``kind``.

    Args:
      fn: ``fn(float32 tensor of images) -> logits`` (an array or a tensor).
      input_shape: the per-example input shape.
      class_names: one name per class (None or empty: none known).
      kind: ``"keras"`` or ``"saved_model"``: what was loaded.

    Examples:
        >>> predictor = Predictor(lambda x: 2 * x[:, :2], (3,), ["cat", "dog"], "keras")
        >>> predictor([[0.5, 0.25, 0.0]]), predictor.input_shape, predictor.class_names
        (array([[1. , 0.5]], dtype=float32), (3,), ['cat', 'dog'])
    """

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
    classes, else the class ids as strings.

    Args:
      model_path: the ``.keras`` file or SavedModel directory; its directory is the run's.
      num_classes: the model's output classes (the run's names are used only if as many).

    Returns:
      A list of ``num_classes`` names.

    Examples:
        >>> class_names_for("/nowhere/model.keras", 10)[:2], class_names_for("/nowhere/model.keras", 3)
        (['T-shirt/top', 'Trouser'], ['0', '1', '2'])
        >>> import json, tempfile
        >>> run = tempfile.mkdtemp()
        >>> _ = open(os.path.join(run, "results.json"), "w").write(json.dumps({"class_names": ["cat", "dog"]}))
        >>> class_names_for(os.path.join(run, "model.keras"), 2)
        ['cat', 'dog']
    """
    parent = os.path.dirname(os.path.abspath(model_path.rstrip("/")))
    names = results_class_names(parent)
    if names and len(names) == num_classes:
        return names
    if num_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(num_classes)]


def load_predictor(path: str) -> Predictor:
    """Load a ``.keras`` file or a SavedModel directory written by [`export_model`][tfcustom.experiment.export.export_model].

    Args:
      path: the ``.keras`` file, or the SavedModel directory (with a ``serve`` endpoint).

    Returns:
      A [`Predictor`][tfcustom.experiment.export.Predictor] (``kind`` ``"keras"`` or ``"saved_model"``;
      class names from [`class_names_for`][tfcustom.experiment.export.class_names_for]).

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]).save(path)
        >>> predictor = load_predictor(path)
        >>> predictor.kind, predictor.input_shape, predictor.class_names
        ('keras', (28, 28, 1), ['0', '1', '2'])
    """
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
    shape = model_input_shape(model, None)
    num_classes = int(model(tf.zeros((1,) + shape, tf.float32), training=False).shape[-1])
    return Predictor(lambda x: model(x, training=False).numpy(), shape, class_names_for(path, num_classes), "keras")


def read_png_images(paths: Sequence[str], size=(28, 28), channels: int = 1) -> np.ndarray:
    """PNG files -> float32 array ``(N, H, W, channels)`` in [0, 1].

    Colour images are converted to grey (``channels=1``), alpha is dropped,
    other sizes are resized (area-averaged) to ``size``. 16-bit PNGs are
    scaled by 65535. Fashion-MNIST images are light garments on a black
    background; photos of dark objects on white need inverting first.

    Args:
      paths: the PNG files (at least one).
      size: ``(H, W)`` of the images returned.
      channels: 1 (grey) or 3 (RGB).

    Returns:
      A float32 array ``(len(paths), H, W, channels)`` in [0, 1].

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "white.png")
        >>> tf.io.write_file(path, tf.io.encode_png(tf.fill((56, 56, 3), tf.constant(255, tf.uint8))))
        >>> images = read_png_images([path])   # colour to grey, 56x56 to 28x28
        >>> images.shape, float(images.min()), float(images.max())
        ((1, 28, 28, 1), 1.0, 1.0)
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
    """An IDX image file -> float32 ``(N, H, W, 1)`` in [0, 1] (the first ``limit``).

    Args:
      path: an IDX images file (``.gz`` or plain), e.g. ``t10k-images-idx3-ubyte.gz``.
      limit: keep the first ``limit`` images (None: all).

    Returns:
      A float32 array ``(N, H, W, 1)`` (or ``(N, H, W, C)`` for a 4-dimensional file); integer pixels
      are divided by 255.

    Examples:
        >>> import tempfile
        >>> from tfcustom.data import write_idx
        >>> path = os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte.gz")
        >>> write_idx(path, np.full((5, 28, 28), 51, np.uint8))
        >>> x = read_idx_images(path, limit=2)
        >>> x.shape, x.dtype, round(float(x.max()), 6)
        ((2, 28, 28, 1), dtype('float32'), 0.2)
    """
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
    """Classify ``images`` (float32 in [0, 1]) -> ``{"class_ids", "class_names", "probabilities", "logits"}``.

    Args:
      predictor: a [`Predictor`][tfcustom.experiment.export.Predictor].
      images: ``(N, *predictor.input_shape)`` float32 images in [0, 1].

    Returns:
      ``{"class_ids": (N,), "class_names": N names, "probabilities": (N, classes) softmax, "logits": (N, classes)}``.

    Examples:
        >>> predictor = Predictor(lambda x: np.log([[1.0, 3.0]] * len(x)), (2,), ["cat", "dog"], "keras")
        >>> out = predict(predictor, np.zeros((2, 2)))
        >>> out["class_ids"].tolist(), out["class_names"], out["probabilities"].round(2).tolist()
        ([1, 1], ['dog', 'dog'], [[0.25, 0.75], [0.25, 0.75]])
    """
    images = np.asarray(images, np.float32)
    if tuple(images.shape[1:]) != predictor.input_shape:
        raise data_error("images do not have the model's input shape", tuple(images.shape[1:]),
                         f"pass images of shape {predictor.input_shape}")
    logits = predictor(images)
    probs = tf.nn.softmax(logits, axis=-1).numpy()
    ids = probs.argmax(-1)
    names = predictor.class_names or [str(i) for i in range(probs.shape[-1])]
    return {"class_ids": ids, "class_names": [names[i] for i in ids], "probabilities": probs, "logits": logits}
