"""``ResNet``: a small residual network of ``ResidualBlock``s."""

from __future__ import annotations

import keras

from tfcustom.errors import check_positive_int
from tfcustom.layers import ConvBlock, Dense, ResidualBlock, get_activation, serialize_activation
from tfcustom.models.test_time_flip import flip_averaged_logits
from tfcustom.models._base import _StackModel, _attach, _logits_dtype, _positive_ints


@keras.saving.register_keras_serializable(package="tfcustom")
class ResNet(_StackModel):
    """A small ResNet for 28x28 / 32x32 images.

    Stem: 3x3 ConvBlock with ``stage_filters[0]`` filters (no pooling). Then
    one stage per entry of ``stage_filters``, each with ``blocks_per_stage``
    [`ResidualBlock`][tfcustom.layers.ResidualBlock]; every stage after the first
    halves the resolution with a stride-2 first block. Global average
    pooling -> Dense logits.

    Args:
        num_classes: number of logits.
        stage_filters: filters of each stage.
        blocks_per_stage: ResidualBlocks per stage.
        activation: anything ``keras.activations.get`` accepts.
        test_time_flip: at inference, average the predictions of each image
            and its mirror image (`tfcustom.models.test_time_flip`).

    Examples:
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
        test_time_flip=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.stage_filters = _positive_ints("stage_filters", stage_filters)
        self.blocks_per_stage = check_positive_int("blocks_per_stage", blocks_per_stage)
        self.activation = get_activation(activation)
        self.test_time_flip = bool(test_time_flip)
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
        if self.test_time_flip and not training:
            return flip_averaged_logits(lambda x: self._forward(x, training), inputs)
        return self._forward(inputs, training)

    def _forward(self, inputs, training):
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
                "test_time_flip": self.test_time_flip,
            }
        )
        return config
