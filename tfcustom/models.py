"""Classification models built from :mod:`tfcustom.layers`; all return logits.

Every model is a subclassed ``keras.Model`` whose constructor arguments are
its whole config, so ``.keras`` files reload with ``safe_mode=True``. As with
Keras' own models:

* ``model.build(input_shape)`` creates every variable that calling the model
  on a batch creates (``summary()`` counts them, ``load_weights`` fills them);
* every sublayer is an attribute, so a plain
  ``tf.train.Checkpoint(model=model)`` holds all weights and BatchNorm
  statistics (layers kept only in Python lists are invisible to it);
* sublayers get the model's dtype policy: ``dtype="mixed_float16"`` computes
  the hidden layers in float16, with float32 logits.

Inputs are float32 images in [0, 1] of shape (H, W, C) or flat vectors (MLP
and LogisticRegression flatten whatever they get). None of them ends with a
softmax: pair them with ``from_logits=True`` losses.

Build one by name with :func:`get`:

>>> import numpy as np
>>> from tfcustom import models
>>> models.names()
['cnn', 'logistic_regression', 'mlp', 'resnet']
>>> model = models.get("cnn", num_classes=10)
>>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
(2, 10)
"""

from __future__ import annotations

import inspect

import keras

from tfcustom.errors import check, check_positive_int, config_error
from tfcustom.dropout import Dropout
from tfcustom.layers import ConvBlock, Dense, DenseBlock, ResidualBlock, get_activation, serialize_activation

__all__ = ["MLP", "CNN", "ResNet", "LogisticRegression", "get", "names"]


def _positive_ints(name, values, allow_empty=False):
    if isinstance(values, int) and not isinstance(values, bool):
        values = (values,)
    check(
        isinstance(values, (list, tuple)) and (allow_empty or len(values) > 0),
        f"{name} must be a {'' if allow_empty else 'non-empty '}list of positive ints",
        values,
        f"pass e.g. {name}=(32, 64)",
    )
    for v in values:
        check_positive_int(f"each entry of {name}", v)
    return tuple(values)


def _check_rate(name, rate):
    check(
        isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0,
        f"{name} must be in [0, 1)",
        rate,
        f"pass {name}=0 to disable dropout or a value such as 0.3",
    )
    return float(rate)


def _logits_dtype(policy):
    """float32 logits under a mixed policy (Keras' mixed-precision advice for
    the last layer); the model's own policy otherwise."""
    return "float32" if policy.compute_dtype != policy.variable_dtype else policy


def _attach(model, layers):
    """Also assign each layer of a Python list as an attribute named after the
    layer: TensorFlow's tracking (``tf.train.Checkpoint``) does not look inside
    Keras 3's tracked lists. The list stays (same order, same ``.keras``
    weight paths)."""
    for layer in layers:
        setattr(model, layer.name, layer)


class _StackModel(keras.Model):
    """A model whose sublayers run one after the other: ``_stack()`` lists
    them in call order, and ``build`` builds each on the previous one's output
    shape, creating the same variables as a call on a batch."""

    def _stack(self):
        raise NotImplementedError

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack():
            if not layer.built:  # stateless layers (Flatten, pooling) are built at creation
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._stack():
            shape = tuple(layer.compute_output_shape(shape))
        return shape


@keras.saving.register_keras_serializable(package="tfcustom")
class LogisticRegression(_StackModel):
    """Flatten, then one :class:`~tfcustom.layers.Dense`: multinomial logistic
    regression (softmax regression) returning logits.

    ``num_classes=1`` gives a single logit for binary problems (use it with a
    sigmoid / binary cross-entropy loss). Weights start at zero: the loss is
    convex, so there is no symmetry to break.

    Example:

    >>> import numpy as np
    >>> model = LogisticRegression(num_classes=1)
    >>> model(np.ones((3, 4), "float32")).numpy().tolist()
    [[0.0], [0.0], [0.0]]
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")
        self.logits = Dense(num_classes, kernel_initializer="zeros", dtype=_logits_dtype(self.dtype_policy), name="logits")

    def _stack(self):
        return [self.flatten, self.logits]

    def call(self, inputs, training=None):
        return self.logits(self.flatten(inputs))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config


@keras.saving.register_keras_serializable(package="tfcustom")
class MLP(_StackModel):
    """Flatten -> one :class:`~tfcustom.layers.DenseBlock` per hidden layer
    -> :class:`~tfcustom.layers.Dense` logits.

    Args:
        num_classes: number of logits.
        hidden_units: sizes of the hidden layers (may be empty).
        activation: activation of the hidden layers (anything
            ``keras.activations.get`` accepts).
        dropout: dropout rate after each hidden layer; 0 disables it.
        batch_norm: BatchNormalization in each hidden layer.

    Example:

    >>> import numpy as np
    >>> model = MLP(10, hidden_units=(32,), dropout=0.2)
    >>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
    (2, 10)
    """

    def __init__(
        self,
        num_classes,
        hidden_units=(256, 128),
        activation="relu",
        dropout=0.0,
        batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.hidden_units = _positive_ints("hidden_units", hidden_units, allow_empty=True)
        self.activation = get_activation(activation)
        self.dropout = _check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")
        self.hidden = [
            DenseBlock(
                units,
                activation=self.activation,
                dropout=self.dropout,
                batch_norm=self.batch_norm,
                dtype=self.dtype_policy,
                name=f"hidden_{i}",
            )
            for i, units in enumerate(self.hidden_units)
        ]
        _attach(self, self.hidden)
        self.logits = Dense(num_classes, dtype=_logits_dtype(self.dtype_policy), name="logits")

    def _stack(self):
        return [self.flatten, *self.hidden, self.logits]

    def call(self, inputs, training=None):
        x = self.flatten(inputs)
        for block in self.hidden:
            x = block(x, training=training)
        return self.logits(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "hidden_units": list(self.hidden_units),
                "activation": serialize_activation(self.activation),
                "dropout": self.dropout,
                "batch_norm": self.batch_norm,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfcustom")
class CNN(_StackModel):
    """A small convnet: stages of :class:`~tfcustom.layers.ConvBlock` with max
    pooling, then flatten (or global average pooling) -> dense -> dropout ->
    logits.

    Stage ``i`` has ``convs_per_stage`` ConvBlocks with ``filters[i]``
    filters; the last block of each stage max-pools by ``pool_size`` and
    applies ``conv_dropout``. The defaults (conv32 -> pool -> conv64 -> pool
    -> dense128) cost about 4.3 M multiply-adds per 28x28x1 image, but on a
    2-core CPU the training step is dominated by the memory-bound work on the
    28x28x32 activations (BatchNorm statistics, ReLU, pooling): measured
    ~650 images/s, versus ~1300-1500 images/s with ``filters=(16, 32)``.

    Args:
        num_classes: number of logits.
        filters: filters of each stage.
        dense_units: size of the hidden dense layer; 0/None skips it.
        dropout: dropout rate before the logits; 0 disables it.
        batch_norm: BatchNormalization in the conv and dense blocks.
        kernel_size: conv kernel size.
        convs_per_stage: ConvBlocks per stage.
        pool_size: max-pooling size (and stride) at the end of each stage.
        conv_dropout: dropout rate at the end of each stage; 0 disables it.
        activation: activation of every block (anything
            ``keras.activations.get`` accepts).
        global_pool: global average pooling instead of flatten.

    Example:

    >>> import numpy as np
    >>> model = CNN(10, filters=(8, 16), dense_units=32)
    >>> tuple(model(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 10)
    """

    def __init__(
        self,
        num_classes,
        filters=(32, 64),
        dense_units=128,
        dropout=0.3,
        batch_norm=True,
        kernel_size=3,
        convs_per_stage=1,
        pool_size=2,
        conv_dropout=0.0,
        activation="relu",
        global_pool=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.filters = _positive_ints("filters", filters)
        check(
            dense_units in (None, 0) or (isinstance(dense_units, int) and not isinstance(dense_units, bool) and dense_units > 0),
            "dense_units must be a positive int, 0 or None",
            dense_units,
            "pass e.g. dense_units=128, or 0 to go straight to the logits",
        )
        self.dense_units = int(dense_units or 0)
        self.dropout = _check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.convs_per_stage = check_positive_int("convs_per_stage", convs_per_stage)
        check(
            isinstance(pool_size, int) and not isinstance(pool_size, bool) and pool_size >= 2,
            "CNN pool_size must be an int >= 2",
            pool_size,
            "pass e.g. pool_size=2",
        )
        self.pool_size = pool_size
        self.conv_dropout = _check_rate("conv_dropout", conv_dropout)
        self.activation = get_activation(activation)
        self.global_pool = bool(global_pool)
        self._make_layers()

    def _make_layers(self):
        policy = self.dtype_policy
        self.conv_blocks = []
        for stage, f in enumerate(self.filters):
            for j in range(self.convs_per_stage):
                last = j == self.convs_per_stage - 1
                self.conv_blocks.append(
                    ConvBlock(
                        f,
                        kernel_size=self.kernel_size,
                        activation=self.activation,
                        pool_size=self.pool_size if last else None,
                        dropout=self.conv_dropout if last else 0.0,
                        batch_norm=self.batch_norm,
                        dtype=policy,
                        name=f"stage{stage}_conv{j}",
                    )
                )
        _attach(self, self.conv_blocks)
        if self.global_pool:
            self.pool = keras.layers.GlobalAveragePooling2D(dtype=policy, name="global_pool")
        else:
            self.pool = keras.layers.Flatten(dtype=policy, name="flatten")
        if self.dense_units:
            self.hidden = DenseBlock(
                self.dense_units,
                activation=self.activation,
                dropout=self.dropout,
                batch_norm=self.batch_norm,
                dtype=policy,
                name="hidden",
            )
            self.head_dropout = None
        else:
            self.hidden = None
            self.head_dropout = Dropout(self.dropout, dtype=policy, name="dropout") if self.dropout else None
        self.logits = Dense(self.num_classes, dtype=_logits_dtype(policy), name="logits")

    def _stack(self):
        head = [l for l in (self.hidden, self.head_dropout) if l is not None]
        return [*self.conv_blocks, self.pool, *head, self.logits]

    def call(self, inputs, training=None):
        x = inputs
        for block in self.conv_blocks:
            x = block(x, training=training)
        x = self.pool(x)
        if self.hidden is not None:
            x = self.hidden(x, training=training)
        if self.head_dropout is not None:
            x = self.head_dropout(x, training=training)
        return self.logits(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "filters": list(self.filters),
                "dense_units": self.dense_units,
                "dropout": self.dropout,
                "batch_norm": self.batch_norm,
                "kernel_size": self.kernel_size,
                "convs_per_stage": self.convs_per_stage,
                "pool_size": self.pool_size,
                "conv_dropout": self.conv_dropout,
                "activation": serialize_activation(self.activation),
                "global_pool": self.global_pool,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfcustom")
class ResNet(_StackModel):
    """A small ResNet for 28x28 / 32x32 images.

    Stem: 3x3 ConvBlock with ``stage_filters[0]`` filters (no pooling). Then
    one stage per entry of ``stage_filters``, each with ``blocks_per_stage``
    :class:`~tfcustom.layers.ResidualBlock`; every stage after the first
    halves the resolution with a stride-2 first block. Global average
    pooling -> Dense logits.

    Args:
        num_classes: number of logits.
        stage_filters: filters of each stage.
        blocks_per_stage: ResidualBlocks per stage.
        activation: anything ``keras.activations.get`` accepts.

    Example:

    >>> import numpy as np
    >>> model = ResNet(10, stage_filters=(8, 16))
    >>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
    (2, 10)
    """

    def __init__(
        self,
        num_classes,
        stage_filters=(16, 32, 64),
        blocks_per_stage=1,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.stage_filters = _positive_ints("stage_filters", stage_filters)
        self.blocks_per_stage = check_positive_int("blocks_per_stage", blocks_per_stage)
        self.activation = get_activation(activation)
        policy = self.dtype_policy
        self.stem = ConvBlock(self.stage_filters[0], activation=self.activation, dtype=policy, name="stem")
        self.res_blocks = [
            ResidualBlock(
                f,
                strides=2 if (stage > 0 and j == 0) else 1,
                activation=self.activation,
                dtype=policy,
                name=f"stage{stage}_block{j}",
            )
            for stage, f in enumerate(self.stage_filters)
            for j in range(self.blocks_per_stage)
        ]
        _attach(self, self.res_blocks)
        self.pool = keras.layers.GlobalAveragePooling2D(dtype=policy, name="global_pool")
        self.logits = Dense(num_classes, dtype=_logits_dtype(policy), name="logits")

    def _stack(self):
        return [self.stem, *self.res_blocks, self.pool, self.logits]

    def call(self, inputs, training=None):
        x = self.stem(inputs, training=training)
        for block in self.res_blocks:
            x = block(x, training=training)
        return self.logits(self.pool(x))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "stage_filters": list(self.stage_filters),
                "blocks_per_stage": self.blocks_per_stage,
                "activation": serialize_activation(self.activation),
            }
        )
        return config


_REGISTRY = {
    "cnn": CNN,
    "logistic_regression": LogisticRegression,
    "mlp": MLP,
    "resnet": ResNet,
}

# Keras base-layer arguments every model also accepts.
_BASE_KWARGS = ("name", "dtype")


def names():
    """Return the sorted names :func:`get` accepts."""
    return sorted(_REGISTRY)


def get(name, /, num_classes, **kwargs):
    """Build the model registered as ``name`` with ``num_classes`` logits.

    ``kwargs`` go to the model's constructor (including Keras' own ``name``
    and ``dtype``; ``name`` here is positional-only so the two don't clash);
    a model name or argument the model does not know raises
    :class:`~tfcustom.errors.ConfigError`. Model names are case-insensitive.

    Example:

    >>> get("mlp", 10, hidden_units=(64,)).hidden_units
    (64,)
    """
    check(
        isinstance(name, str) and name.lower() in _REGISTRY,
        "unknown model name",
        name,
        "choose one of: " + ", ".join(names()),
    )
    cls = _REGISTRY[name.lower()]
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters
        if p not in ("self", "num_classes", "kwargs")
    ]
    unknown = sorted(set(kwargs) - set(params) - set(_BASE_KWARGS))
    if unknown:
        raise config_error(
            f"unknown argument(s) for model {name.lower()!r}",
            unknown,
            "accepted arguments: " + ", ".join(params + list(_BASE_KWARGS)),
        )
    return cls(num_classes, **kwargs)
