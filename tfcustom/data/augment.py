"""Stateless image augmentation: random pad-and-crop and horizontal flip.

Every random choice is a pure function of ``(seed, epoch, example index)``: a
counter-based hash (SplitMix64, the generator behind NumPy's ``SeedSequence``
mixing) of those three numbers, computed with TensorFlow integer ops inside the
``tf.data`` map. Nothing depends on the batch an example lands in, on the
replica that reads it or on what was read before, so:

* a run resumed at any step sees the same augmented examples as an
  uninterrupted one (bitwise), and
* 1, 2 or 4 replicas see the same augmented version of every example.

``flip`` mirrors left-right with probability 1/2: fine for clothes (a mirrored
shirt is a shirt), wrong for digits and text (a mirrored 3 is not a 3).
``crop`` zero-pads ``pad`` pixels on each side and crops back to the original
size at an offset drawn uniformly from ``[0, 2*pad]`` along each axis
(the CIFAR recipe; ``pad`` defaults to 4, i.e. 1/7 of a 28-pixel side).

Examples:
    >>> images = tf.zeros([8, 28, 28, 1], tf.uint8)
    >>> out = augment_batch(images, tf.range(8, dtype=tf.int64), epoch=0, seed=0, ops=("crop", "flip"))
    >>> out.shape
    TensorShape([8, 28, 28, 1])
"""

from __future__ import annotations

from typing import Sequence, Tuple

import tensorflow as tf

from tfcustom.errors import config_error

AUGMENTATIONS = ("crop", "flip")
CROP_PAD = 4

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def parse_augment(spec) -> Tuple[str, ...]:
    """``"crop,flip"`` / ``["crop", "flip"]`` / ``""`` -> a validated tuple of names.

    Args:
      spec: a comma-separated string, a sequence of names, or None; names
        from ``AUGMENTATIONS`` (``"crop"``, ``"flip"``).

    Returns:
      The names in the order given, each once (``()``: no augmentation).

    Examples:
        >>> parse_augment("flip, crop,flip")
        ('flip', 'crop')
        >>> parse_augment(None), parse_augment("")
        ((), ())
        >>> parse_augment(["rotate"])
        Traceback (most recent call last):
        ...
        tfcustom.errors.ConfigError: unknown augmentation (received: ['rotate']). Use a comma-separated subset of: crop, flip.
    """
    if spec is None:
        return ()
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise config_error("unknown augmentation", bad, f"use a comma-separated subset of: {', '.join(AUGMENTATIONS)}")
    return tuple(dict.fromkeys(names))


def _u64(value) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def _splitmix64(x: tf.Tensor) -> tf.Tensor:
    """The SplitMix64 finaliser: a bijective, well-mixed uint64 -> uint64 hash."""
    x = x + _u64(_GOLDEN)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(30))) * _u64(_MIX1)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(27))) * _u64(_MIX2)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(31)))


def random_bits(seed, epoch, index: tf.Tensor, stream: int) -> tf.Tensor:
    """32 random bits (as int64 in [0, 2**32)) per element of ``index``, a pure
    function of ``(seed, epoch, index, stream)``."""
    index = tf.cast(index, tf.int64)
    key = _splitmix64(tf.bitwise.bitwise_xor(_splitmix64(tf.bitcast(tf.cast(seed, tf.int64), tf.uint64)), tf.bitcast(tf.cast(epoch, tf.int64), tf.uint64)))
    h = _splitmix64(tf.bitwise.bitwise_xor(_splitmix64(key + tf.cast(stream, tf.uint64)), tf.bitcast(index, tf.uint64)))
    return tf.cast(tf.bitwise.right_shift(h, _u64(32)), tf.int64)


def random_offsets_and_flips(seed, epoch, index: tf.Tensor, pad: int = CROP_PAD):
    """Per example: crop offsets ``(dy, dx)`` in ``[0, 2*pad]`` and a flip bit."""
    n = 2 * pad + 1
    dy = tf.cast(random_bits(seed, epoch, index, 1) % n, tf.int32)
    dx = tf.cast(random_bits(seed, epoch, index, 2) % n, tf.int32)
    flip = tf.equal(random_bits(seed, epoch, index, 3) % 2, 1)
    return dy, dx, flip


def augment_batch(images: tf.Tensor, index: tf.Tensor, epoch, seed, ops: Sequence[str], pad: int = CROP_PAD) -> tf.Tensor:
    """Augment a batch ``[B, H, W, C]`` (any dtype) of examples with global ids ``index``.

    One gather per axis: crop and flip are both index arithmetic, so the
    batch is augmented without a per-example ``map``.

    Args:
      images: the batch, ``[B, H, W, C]``.
      index: ``[B]`` integer ids of the examples (their index in the
        split): the random choices depend on them, not on the batch.
      epoch: the epoch (a new draw every epoch).
      seed: the base seed.
      ops: augmentation names, as [`parse_augment`][tfcustom.data.parse_augment] takes them.
      pad: the zero padding of ``"crop"``, in pixels per side.

    Returns:
      The augmented batch, of the shape and dtype of ``images``
      (``images`` itself when ``ops`` is empty).

    Examples:
        Every row of this batch is ``[0, 1, 2, 3]``; ``"flip"`` mirrors some of them:

        >>> images = tf.tile(tf.reshape(tf.range(4), [1, 1, 4, 1]), [8, 1, 1, 1])
        >>> ids = tf.range(8, dtype=tf.int64)
        >>> out = augment_batch(images, ids, epoch=0, seed=0, ops="flip")
        >>> sorted({tuple(row) for row in out[:, 0, :, 0].numpy().tolist()})
        [(0, 1, 2, 3), (3, 2, 1, 0)]
        >>> same = augment_batch(tf.reverse(images, [0]), tf.reverse(ids, [0]), epoch=0, seed=0, ops="flip")
        >>> bool(tf.reduce_all(tf.reverse(same, [0]) == out))  # a function of the example id, not its position
        True
    """
    ops = parse_augment(ops)
    if not ops:
        return images
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    dy, dx, flip = random_offsets_and_flips(seed, epoch, index, pad)
    if "crop" not in ops:
        dy, dx, p = tf.fill(tf.shape(dy), pad), tf.fill(tf.shape(dx), pad), 0
    else:
        p = pad
        images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    if "flip" not in ops:
        flip = tf.zeros_like(flip)
    # Offsets are relative to the padded image; without crop the offset is 0.
    dy, dx = dy - (pad - p), dx - (pad - p)
    rows = dy[:, None] + tf.range(h)[None, :]
    cols = tf.where(flip[:, None], dx[:, None] + w - 1 - tf.range(w)[None, :], dx[:, None] + tf.range(w)[None, :])
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)
