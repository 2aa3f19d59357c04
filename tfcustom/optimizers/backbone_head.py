"""``BackboneHeadOptimizer``: two learning rates in one Keras optimizer,
routing each variable to the backbone's or the head's inner optimizer by its
layer's name. Re-exported by [`tfcustom.experiment.transfer`][tfcustom.experiment.transfer]."""

from __future__ import annotations

import fnmatch

import keras

from tfcustom.errors import check
from tfcustom.models.layer_patterns import check_patterns

try:  # what Keras' own wrapper (LossScaleOptimizer) uses in build()
    from keras.src.utils.tracking import no_automatic_dependency_tracking as _no_tracking
except ImportError:  # pragma: no cover
    def _no_tracking(fn):
        return fn


def variable_layer_name(variable) -> str:
    """The top-level layer a model variable belongs to.

    Args:
      variable: a Keras variable (its ``path``).

    Returns:
      The second component of its path (``"cnn/stage0_conv0/conv/kernel"`` ->
      ``"stage0_conv0"``); the first (the whole path, if it has no ``/``) for a variable outside a model.

    Examples:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="head")], name="net")
        >>> model.weights[0].path, variable_layer_name(model.weights[0])
        ('net/head/kernel', 'head')
        >>> variable_layer_name(keras.Variable(1.0, name="scale"))
        'scale'
    """
    parts = variable.path.split("/")
    return parts[1] if len(parts) >= 3 else parts[0]


@keras.saving.register_keras_serializable(package="tfcustom")
class BackboneHeadOptimizer(keras.optimizers.Optimizer):
    """Two optimizers in one: backbone variables go to ``backbone_optimizer``,
    all others (the head) to ``head_optimizer``.

    A variable belongs to the backbone when its top-level layer name
    ([`variable_layer_name`][tfcustom.optimizers.backbone_head.variable_layer_name]) or its full path matches one of the
    ``backbone`` patterns. Each inner optimizer keeps its own slots,
    iteration counter and learning-rate schedule, so with equal settings the
    pair updates exactly like one optimizer, and ``learning_rate=0`` for the
    backbone leaves its trainable weights unchanged (BatchNorm moving
    statistics still follow the data unless the layers are frozen).

    ``learning_rate`` (what the Trainer logs) is the head optimizer's.
    ``iterations`` counts ``apply_gradients`` calls.

    Args:
      backbone_optimizer: a Keras optimizer (e.g. ``Adam(1e-4)``, or
        ``Adam(0.0)`` to hold the backbone still while training).
      head_optimizer: a Keras optimizer for every other variable.
      backbone: layer-name patterns of the backbone.

    Examples:
        >>> import numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="stage0"),
        ...                           keras.layers.Dense(2, name="logits")])
        >>> opt = BackboneHeadOptimizer(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.1), backbone=["stage*"])
        >>> opt.build(model.trainable_variables)
        >>> before = [w.numpy().copy() for w in model.weights]
        >>> grads = [np.ones(w.shape, "float32") for w in model.trainable_variables]
        >>> _ = opt.apply_gradients(zip(grads, model.trainable_variables))
        >>> [bool((w.numpy() == b).all()) for w, b in zip(model.weights, before)]  # the backbone stays still
        [True, True, False, False]
    """

    def __init__(self, backbone_optimizer, head_optimizer, backbone=("*",), name=None, **kwargs):
        check(not kwargs, "BackboneHeadOptimizer takes no base-optimizer arguments", sorted(kwargs),
              "set weight_decay, clipnorm, ... on the inner optimizers")
        for what, opt in (("backbone_optimizer", backbone_optimizer), ("head_optimizer", head_optimizer)):
            check(isinstance(opt, keras.optimizers.Optimizer), f"{what} must be a Keras optimizer", type(opt).__name__,
                  "pass e.g. keras.optimizers.Adam(1e-4)")
        check(backbone_optimizer is not head_optimizer, "backbone and head need two distinct optimizer instances", head_optimizer.name,
              "build two optimizers (they keep separate slots)")
        super().__init__(learning_rate=0.0, name=name)
        self.backbone_optimizer = backbone_optimizer
        self.head_optimizer = head_optimizer
        self.backbone = check_patterns(backbone, "backbone patterns")
        check(self.backbone, "backbone needs at least one layer-name pattern", backbone, "pass e.g. backbone=['stage*']")

    def is_backbone(self, variable) -> bool:
        layer, path = variable_layer_name(variable), variable.path
        return any(fnmatch.fnmatchcase(layer, p) or fnmatch.fnmatchcase(path, p) for p in self.backbone)

    @_no_tracking
    def build(self, var_list):
        var_list = list(var_list)
        backbone = [v for v in var_list if self.is_backbone(v)]
        head = [v for v in var_list if not self.is_backbone(v)]
        self.backbone_optimizer.build(backbone)
        self.head_optimizer.build(head)
        self._is_backbone_index = [self.is_backbone(v) for v in var_list]
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.backbone_optimizer.variables + self.head_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            check(trainable_variables is not None, "the optimizer is not built", self.name, "call optimizer.build(model.trainable_variables) first")
            trainable_variables = list(trainable_variables)
            self.build(trainable_variables)
        variables = list(trainable_variables) if trainable_variables is not None else self._trainable_variables
        grads = list(grads)
        self._check_variables_are_known(variables)
        groups = {True: ([], []), False: ([], [])}
        for g, v in zip(grads, variables):
            key = self.is_backbone(v)
            groups[key][0].append(g)
            groups[key][1].append(v)
        if groups[True][1]:
            self.backbone_optimizer.apply(groups[True][0], groups[True][1])
        if groups[False][1]:
            self.head_optimizer.apply(groups[False][0], groups[False][1])
        self._iterations.assign_add(1)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError("BackboneHeadOptimizer supports the TensorFlow backend's stateful apply() only")

    @property
    def learning_rate(self):
        return self.head_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.head_optimizer.learning_rate = value

    def finalize_variable_values(self, var_list):
        var_list = list(var_list)
        self.backbone_optimizer.finalize_variable_values([v for v in var_list if self.is_backbone(v)])
        self.head_optimizer.finalize_variable_values([v for v in var_list if not self.is_backbone(v)])

    def get_config(self):
        return {
            "name": self.name,
            "backbone_optimizer": keras.saving.serialize_keras_object(self.backbone_optimizer),
            "head_optimizer": keras.saving.serialize_keras_object(self.head_optimizer),
            "backbone": list(self.backbone),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone_optimizer"), custom_objects=custom_objects)
        head = keras.saving.deserialize_keras_object(config.pop("head_optimizer"), custom_objects=custom_objects)
        return cls(backbone, head, **config)
