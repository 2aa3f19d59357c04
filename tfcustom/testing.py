"""Testing helpers: a float64 finite-difference gradient checker.

[`check_gradients`][tfcustom.testing.check_gradients] compares the gradients ``tf.GradientTape`` computes
(autodiff, or a hand-written ``tf.custom_gradient``) with central finite
differences, both in float64, and returns the largest relative error. A
correct gradient gives ~1e-9 or less; a wrong one gives ~1e-1 or more.

>>> import numpy as np, tensorflow as tf
>>> from tfcustom.testing import check_gradients
>>> check_gradients(tf.sin, np.linspace(-2.0, 2.0, 5)) < 1e-8
True
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from tfcustom.errors import check

__all__ = ["check_gradients"]

_FLOAT_POLICIES = ("float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16")
_PROJECTION_SEED = 0
# A tensor whose gradients are all below ~1e7 x the finite-difference round-off
# is compared absolutely: pure round-off then gives an error of <= 1e-7.
_NOISE_FLOOR_FACTOR = 1e7
_FLOAT64_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"}, "registered_name": None}


def _is_float(x) -> bool:
    return tf.as_dtype(x.dtype).is_floating


def _to_float64_inputs(inputs):
    """Float leaves -> float64 tensors; other leaves (e.g. int ids) unchanged."""

    def convert(x):
        x = tf.convert_to_tensor(x)
        return tf.cast(x, tf.float64) if x.dtype.is_floating else x

    return tf.nest.map_structure(convert, inputs)


def _float64_config(obj):
    """A serialized Keras object with every floating dtype (policy) set to float64."""
    if isinstance(obj, list):
        return [_float64_config(o) for o in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if key == "dtype" and isinstance(value, str) and value in _FLOAT_POLICIES:
            out[key] = "float64"
        elif (
            key == "dtype"
            and isinstance(value, dict)
            and "DTypePolicy" in str(value.get("class_name"))
            and value.get("config", {}).get("name") in _FLOAT_POLICIES
        ):
            out[key] = dict(_FLOAT64_POLICY)
        else:
            out[key] = _float64_config(value)
    return out


@contextlib.contextmanager
def _float64_defaults():
    """Make float64 the default policy, so sublayers created in ``__init__``
    without an explicit dtype are float64 too."""
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    try:
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)


def _is_float64_layer(layer) -> bool:
    policy = layer.dtype_policy
    return policy.compute_dtype == "float64" and policy.variable_dtype == "float64" and all(
        w.dtype == "float64" for w in layer.weights if tf.as_dtype(w.dtype).is_floating
    )


def _float64_copy(layer, inputs64):
    """A float64 copy of ``layer`` (rebuilt from its config) holding its weights."""
    try:
        config = _float64_config(keras.saving.serialize_keras_object(layer))
        with _float64_defaults():
            copy = keras.saving.deserialize_keras_object(config)
    except Exception as e:  # noqa: BLE001 - reported with the template
        check(
            False,
            f"cannot rebuild a float64 copy of the layer from its config ({type(e).__name__}: {e})",
            type(layer).__name__,
            "implement get_config() for the layer and register it with "
            "@keras.saving.register_keras_serializable, or pass a layer built with dtype='float64'",
        )
    if not layer.built or not copy.built or len(copy.weights) != len(layer.weights):
        with _float64_defaults():
            copy(inputs64)
    check(
        [tuple(w.shape) for w in copy.weights] == [tuple(w.shape) for w in layer.weights],
        "the float64 copy of the layer does not have the same weights as the layer",
        [w.path for w in layer.weights],
        "build the layer (call it once) before checking its gradients",
    )
    for src, dst in zip(layer.weights, copy.weights):
        value = keras.ops.convert_to_numpy(src)
        dst.assign(value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value)
    return copy


def _relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> float:
    """``max|a - n| / max(max|a|, max|n|, floor)`` over one tensor."""
    scale = max(float(np.max(np.abs(analytic), initial=0.0)), float(np.max(np.abs(numeric), initial=0.0)), floor)
    diff = float(np.max(np.abs(analytic - numeric), initial=0.0))
    return diff / scale if diff > 0 else 0.0


def check_gradients(fn_or_layer, inputs, *, epsilon: float = 1e-6, variables=None) -> float:
    """Max relative error between tape gradients and central finite differences.

    The checked scalar is ``f = sum(r * fn(inputs))`` (over all outputs), with
    ``r`` a fixed standard-normal tensor of the output's shape (seed 0). A
    plain ``sum(fn(inputs))`` (``r = 1``) would be blind to exactly the layers
    most worth checking: its gradient vanishes identically for a softmax or a
    layer normalization (their outputs sum to a constant). The gradient of
    ``f`` with respect to every floating-point input (and the variables, see
    below) is computed twice, in float64:

    * analytically, with ``tf.GradientTape`` (so a ``tf.custom_gradient`` is
      what gets checked);
    * numerically, ``(f(x + epsilon e_i) - f(x - epsilon e_i)) / (2 epsilon)``
      for every element ``i``.

    For each input/variable tensor the error is ``max_i |a_i - n_i| /
    max(max_i |a_i|, max_i |n_i|, floor)``: relative to the tensor's largest
    gradient entry, so entries whose true gradient is ~0 do not blow it up but
    a single wrong entry still shows. ``floor = 1e7 * eps64 * sum|r * fn(x)| /
    epsilon`` (1e7 times the round-off of a finite difference, ~1e-2 for
    outputs of size ~1): a tensor whose gradient is genuinely zero (e.g. a
    bias followed by batch normalization) then reports its round-off as an
    error <= 1e-7 instead of ~1. The result is the maximum over the tensors.
    Nothing is asserted or raised for a large error: the caller decides, e.g.
    ``assert check_gradients(layer, x) < 1e-6``.

    Args:
        fn_or_layer: a ``keras.layers.Layer`` (or model), or a function of
            ``inputs`` computing in float64.

            * A layer that is not already float64 is rebuilt as a float64 copy
              from its config (all floating dtype policies, including nested
              layers', set to float64) with its current weights cast to
              float64; the original layer is not modified. It is called as
              ``layer(inputs)`` (Keras' default ``training``), so use
              deterministic layers.
            * A function receives float64 inputs and must return float64
              outputs (a float32 computation makes the finite differences
              meaningless: a ConfigError says so).
        inputs: an array/tensor or a nested structure (list, tuple, dict) of
            them. Floating leaves are cast to float64 and checked; integer
            leaves (e.g. token ids) are passed through unchanged.
        epsilon: the finite-difference step.
        variables: which variables to check besides the inputs.

            * Layer: None means all its trainable weights; otherwise a list of
              the layer's weights (the matching weights of the float64 copy
              are checked); ``[]`` checks the inputs only.
            * Function: None or ``[]`` for none; otherwise float64
              ``tf.Variable``/``keras.Variable`` objects the function reads
              (they are perturbed in place and restored).

    Returns:
        The max relative error (a Python float).

    Examples:
        >>> import numpy as np, keras
        >>> layer = keras.layers.Dense(3, activation="tanh")
        >>> x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
        >>> check_gradients(layer, x) < 1e-6
        True
        >>> @tf.custom_gradient
        ... def wrong_square(x):
        ...     return x * x, lambda dy: dy * x   # the gradient is 2 * x: half of it is missing
        >>> round(check_gradients(wrong_square, np.array([1.0, 2.0])), 6)
        0.5
    """
    check(
        isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and epsilon > 0,
        "epsilon must be a positive number",
        epsilon,
        "pass e.g. epsilon=1e-6",
    )
    inputs64 = _to_float64_inputs(inputs)
    if isinstance(fn_or_layer, keras.layers.Layer):
        fn, checked_vars = _layer_under_check(fn_or_layer, inputs64, variables)
    else:
        fn, checked_vars = _function_under_check(fn_or_layer, variables)
    flat_inputs = tf.nest.flatten(inputs64)
    float_pos = [i for i, t in enumerate(flat_inputs) if t.dtype.is_floating]
    check(
        bool(float_pos) or bool(checked_vars),
        "nothing to check: no floating-point inputs and no variables",
        [t.dtype.name for t in flat_inputs],
        "pass floating-point inputs or variables",
    )
    total = _projected_sum(fn, inputs64)

    # Analytic gradients.
    watched = [flat_inputs[i] for i in float_pos]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        f, magnitude = total(flat_inputs)
    analytic = tape.gradient(f, watched + checked_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    analytic = [np.asarray(tf.convert_to_tensor(g), np.float64) for g in analytic]
    # Round-off of f(x + e) - f(x - e), divided by 2 epsilon: the absolute
    # accuracy of a finite-difference gradient entry.
    noise = np.finfo(np.float64).eps * max(float(magnitude), 1.0) / epsilon
    floor = _NOISE_FLOOR_FACTOR * noise

    numeric = [_input_differences(total, flat_inputs, i, epsilon) for i in float_pos]
    numeric += [_variable_differences(total, flat_inputs, v, epsilon) for v in checked_vars]
    return max((_relative_error(a, n, floor) for a, n in zip(analytic, numeric)), default=0.0)


def _layer_under_check(layer, inputs64, variables):
    """``(function, variables)`` of a layer: its float64 copy (unless float64 already) and the copy's weights to check."""
    if not layer.built:
        layer(tf.nest.map_structure(lambda t: tf.cast(t, layer.compute_dtype) if t.dtype.is_floating else t, inputs64))
    target = layer if _is_float64_layer(layer) else _float64_copy(layer, inputs64)
    if variables is None:
        return target, list(target.trainable_weights)
    index = {id(w): i for i, w in enumerate(layer.weights)}
    for v in variables:
        check(
            id(v) in index,
            "variables must be weights of the layer being checked",
            getattr(v, "path", getattr(v, "name", v)),
            f"pass a subset of layer.weights ({[w.path for w in layer.weights]}), or None for all trainable weights",
        )
    return target, [target.weights[index[id(v)]] for v in variables]


def _function_under_check(fn, variables):
    """``(function, variables)`` of a plain function: the float64 variables it reads."""
    check(callable(fn), "fn_or_layer must be a keras Layer or a callable", fn, "pass a layer or a function")
    checked_vars = list(variables or [])
    for v in checked_vars:
        check(
            isinstance(v, (tf.Variable, keras.Variable)) and tf.as_dtype(v.dtype) == tf.float64,
            "check_gradients needs float64 variables for a function (finite differences in float32 are noise)",
            f"{getattr(v, 'name', v)} ({getattr(v, 'dtype', type(v).__name__)})",
            "create the variables with dtype='float64', or pass a keras Layer (it is copied to float64)",
        )
    return fn, checked_vars


def _projected_sum(fn, inputs64):
    """``total(flat inputs) -> (f, sum|r * fn|)``: f = sum(r * fn(inputs)), ``r`` fixed random weights
    (one per output leaf, drawn at the first call), and sum(|r * fn(inputs)|) for the noise floor."""
    projections = []

    def total(flat):
        out = fn(tf.nest.pack_sequence_as(inputs64, flat))
        leaves = [tf.convert_to_tensor(o) for o in tf.nest.flatten(out)]
        for o in leaves:
            check(
                o.dtype == tf.float64,
                "check_gradients needs the computation in float64",
                o.dtype.name,
                "make the function compute in float64 (cast inside, or pass a keras Layer, which is copied to float64)",
            )
        if not projections:
            rng = np.random.default_rng(_PROJECTION_SEED)
            projections.extend(tf.constant(rng.standard_normal(o.shape.as_list()), tf.float64) for o in leaves)
        terms = [r * o for r, o in zip(projections, leaves)]
        return tf.add_n([tf.reduce_sum(t) for t in terms]), tf.add_n([tf.reduce_sum(tf.abs(t)) for t in terms])

    return total


def _central_differences(f_at, base: np.ndarray, epsilon: float) -> np.ndarray:
    """``(f(x + epsilon e_i) - f(x - epsilon e_i)) / (2 epsilon)`` for every element ``i`` of ``base``."""
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        values = []
        for sign in (1.0, -1.0):
            shifted = base.copy()
            shifted[idx] += sign * epsilon
            values.append(f_at(shifted))
        grad[idx] = (values[0] - values[1]) / (2 * epsilon)
    return grad


def _input_differences(total, flat_inputs, i: int, epsilon: float) -> np.ndarray:
    """The finite-difference gradient with respect to input leaf ``i``."""
    def f_at(shifted):
        flat = list(flat_inputs)
        flat[i] = tf.constant(shifted)
        return float(total(flat)[0])

    return _central_differences(f_at, flat_inputs[i].numpy(), epsilon)


def _variable_differences(total, flat_inputs, v, epsilon: float) -> np.ndarray:
    """The finite-difference gradient with respect to variable ``v`` (perturbed in place, then restored)."""
    base = keras.ops.convert_to_numpy(v).astype(np.float64)

    def f_at(shifted):
        v.assign(shifted)
        return float(total(flat_inputs)[0])

    try:
        return _central_differences(f_at, base, epsilon)
    finally:
        v.assign(base)
