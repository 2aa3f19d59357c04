"""Sharpness-Aware Minimization (SAM, Foret et al. 2021) as a gradient function.

SAM minimizes ``max_{||e|| <= rho} L(w + e)``. Its gradient is approximated by
two passes over the same batch:

1. ``g = grad L(w)`` ([`tfcustom.training.steps.compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients]);
2. ``e_w = rho * g / (||g||_2 + 1e-12)`` and the returned gradient is
   ``grad L(w + e_w)``.

The optimizer then applies the second gradient to the *unperturbed* ``w``, so
SAM combines with any optimizer. [`SAM`][tfcustom.training.sam.SAM] is a ``gradient_fn`` for
[`tfcustom.training.steps.make_train_step`][tfcustom.training.steps.make_train_step]; it never assigns to the model's
variables (the second pass is a stateless call on perturbed tensors), which is
what makes it work inside a tf.distribute replica context, where assigning a
mirrored variable is not allowed.

On the command line, ``--optimizer=sam_<name>`` means "optimizer ``<name>``
plus the SAM gradient function"; [`split_sam_name`][tfcustom.training.sam.split_sam_name] parses it.

>>> import numpy as np, keras, tensorflow as tf
>>> from tfcustom.training import steps
>>> from tfcustom.training.sam import SAM
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
>>> step = steps.make_train_step(model, keras.losses.MeanSquaredError(),
...                              keras.optimizers.SGD(0.1), gradient_fn=SAM(rho=0.05))
>>> ds = tf.data.Dataset.from_tensors((np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")))
>>> int(step(iter(ds.repeat()), tf.constant(2))["steps_run"])
2
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfcustom import optimizers
from tfcustom.training import steps
from tfcustom.errors import check

__all__ = ["SAM", "split_sam_name", "names", "SAM_PREFIX"]

SAM_PREFIX = "sam_"


@keras.saving.register_keras_serializable(package="tfcustom")
class SAM:
    """Sharpness-Aware Minimization gradient function for ``make_train_step``.

    Called as ``SAM(rho)(model, loss, x, y, sample_weight, global_examples,
    num_replicas)`` inside a replica context, it returns the same dict as
    [`tfcustom.training.steps.compute_loss_and_gradients`][tfcustom.training.replica_step.compute_loss_and_gradients]:

    * ``grads``: the gradient at the perturbed weights ``w + e_w`` (of this
      replica's share of the global-batch loss, aligned with
      ``model.trainable_variables``);
    * ``loss``, ``per_example``, ``y_pred``, ``regularization``: from the first
      pass, i.e. at the **unperturbed** weights ``w``: the reported training
      loss and metrics are those of the model being trained, as without SAM;
    * ``perturbed_loss``: this replica's loss share at ``w + e_w`` (extra key).

    Details:

    * ``e_w = rho * g / (||g||_2 + 1e-12)`` with ``||g||_2`` the global norm
      over all trainable variables of **this replica's** gradient (under a
      multi-replica strategy each replica perturbs with its own gradient, as in
      the paper's m-sharpness; the norm is scale-free, so the replica's
      ``1/global_examples`` weighting does not matter).
    * ``adaptive=True`` is ASAM (Kwon et al. 2021):
      ``e_w = rho * w**2 * g / (||w * g||_2 + 1e-12)`` (elementwise products).
    * The first pass is an ordinary ``model(x, training=True)``, so
      BatchNormalization moving statistics (and RNG seed state) are updated
      once per step, as without SAM. The second pass runs ``model(x,
      training=True)`` inside a ``keras.StatelessScope`` that maps the
      trainable variables to the perturbed tensors and the non-trainable
      variables to their values from *before* the first pass: its state
      updates are discarded, and dropout draws the same mask as in the first
      pass (same seed state), so the two gradients are of the same function.
    * Regularization losses (``model.losses``) are recomputed at ``w + e_w``.
    * ``rho=0`` gives exactly the ordinary gradient (at twice the cost).

    Args:
        rho: radius of the neighbourhood (>= 0; 0.05 in the paper; ASAM
            typically uses a larger value, e.g. 0.5 to 2).
        adaptive: use ASAM's scale-invariant perturbation.

    Examples:
        >>> sam = SAM(rho=0.1, adaptive=True)
        >>> sam.get_config()
        {'rho': 0.1, 'adaptive': True}

    and ``steps.make_train_step(model, loss, optimizer, gradient_fn=sam)``.
    """

    def __init__(self, rho: float = 0.05, adaptive: bool = False):
        check(
            isinstance(rho, (int, float)) and not isinstance(rho, bool) and rho >= 0,
            "rho must be a non-negative number",
            rho,
            "pass e.g. rho=0.05 (rho=0 disables the perturbation)",
        )
        check(
            isinstance(adaptive, bool),
            "adaptive must be a bool",
            adaptive,
            "pass adaptive=True for ASAM or adaptive=False for SAM",
        )
        self.rho = float(rho)
        self.adaptive = adaptive

    def get_config(self) -> dict:
        return {"rho": self.rho, "adaptive": self.adaptive}

    @classmethod
    def from_config(cls, config: dict) -> "SAM":
        return cls(**config)

    def __repr__(self) -> str:
        return f"SAM(rho={self.rho}, adaptive={self.adaptive})"

    def perturbation(self, variables, grads):
        """``e_w`` for each variable (None where the gradient is None)."""
        weights = [tf.convert_to_tensor(v) for v in variables]
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        scaled = [
            None if g is None else (tf.abs(w) * g if self.adaptive else g)
            for w, g in zip(weights, dense)
        ]
        present = [s for s in scaled if s is not None]
        check(
            bool(present),
            "SAM got no gradient for any trainable variable",
            [v.path if hasattr(v, "path") else v.name for v in variables],
            "check that the loss depends on the model's trainable variables",
        )
        norm = tf.linalg.global_norm(present)
        scale = self.rho / (norm + 1e-12)
        out = []
        for w, g in zip(weights, dense):
            if g is None:
                out.append(None)
            elif self.adaptive:
                out.append(tf.cast(scale, g.dtype) * tf.square(w) * g)
            else:
                out.append(tf.cast(scale, g.dtype) * g)
        return out

    def __call__(self, model, loss, x, y, sample_weight, global_examples, num_replicas):
        trainable = model.trainable_variables
        non_trainable = model.non_trainable_variables
        # State (BN statistics, RNG seeds) as it is before the first pass; the
        # second pass starts from it again so dropout masks are the same.
        state_before = [tf.identity(tf.convert_to_tensor(v)) for v in non_trainable]

        first = steps.compute_loss_and_gradients(model, loss, x, y, sample_weight, global_examples, num_replicas)

        eps = self.perturbation(trainable, first["grads"])
        perturbed = [
            tf.convert_to_tensor(v) if e is None else tf.convert_to_tensor(v) + tf.cast(e, v.dtype)
            for v, e in zip(trainable, eps)
        ]
        mapping = list(zip(trainable, perturbed)) + list(zip(non_trainable, state_before))
        with tf.GradientTape() as tape:
            tape.watch(perturbed)
            # Not model.stateless_call: that calls model.call() directly, and a
            # subclassed model whose call() does not forward `training` to its
            # sublayers would run them in inference mode. __call__ inside the
            # scope propagates training=True like the first pass.
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                y_pred = model(x, training=True)
                values = steps.per_example_loss(loss, y, y_pred, sample_weight)
                regularization = steps.regularization_loss(model, 1)
            perturbed_loss = tf.reduce_sum(values) / global_examples + regularization / tf.cast(
                num_replicas, tf.float32
            )
        grads = tape.gradient(perturbed_loss, perturbed)
        grads = [None if g0 is None else g for g0, g in zip(first["grads"], grads)]
        out = dict(first)
        out["grads"] = grads
        out["perturbed_loss"] = perturbed_loss
        return out


def split_sam_name(name: str) -> tuple:
    """``"sam_sgd" -> ("sgd", True)``, ``"adam" -> ("adam", False)``.

    The base name must be one of [`tfcustom.optimizers.names`][tfcustom.optimizers.names].

    Args:
      name: an optimizer name, with or without the ``sam_`` prefix (any case).

    Returns:
      ``(base optimizer name, whether SAM wraps it)``, lower-cased.

    Examples:
        >>> split_sam_name("sam_nesterov")
        ('nesterov', True)
        >>> split_sam_name("Adam")
        ('adam', False)
        >>> try:
        ...     split_sam_name("sam_adan")
        ... except ValueError as e:  # a ConfigError, which is a ValueError
        ...     print(type(e).__name__, str(e).split(". ")[0])
        ConfigError unknown optimizer (received: 'sam_adan')
    """
    check(
        isinstance(name, str),
        "the optimizer name must be a string",
        name,
        f"choose one of: {', '.join(optimizers.names() + names())}",
    )
    lowered = name.lower()
    use_sam = lowered.startswith(SAM_PREFIX)
    base = lowered[len(SAM_PREFIX):] if use_sam else lowered
    check(
        base in optimizers.names(),
        "unknown optimizer",
        name,
        f"choose one of: {', '.join(optimizers.names() + names())}",
    )
    return base, use_sam


def names() -> list:
    """The ``sam_<optimizer>`` names, one per [`tfcustom.optimizers.names`][tfcustom.optimizers.names].

    Returns:
      The names, in the order of ``tfcustom.optimizers.names()``.

    Examples:
        >>> "sam_sgd" in names(), len(names()) == len(optimizers.names())
        (True, True)
    """
    return [SAM_PREFIX + n for n in optimizers.names()]
