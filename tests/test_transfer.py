"""Transfer learning: restore a backbone, freeze by pattern, two learning rates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcustom
from tfcustom import data as data_lib
from tfcustom.errors import ConfigError
from tfcustom.training.trainer import Trainer
from tfcustom.experiment.transfer import BackboneHeadOptimizer, freeze, restore_backbone, subset_classes, unfreeze

SMALL = dict(filters=[4, 8], dense_units=8)


def _cnn(num_classes=5, seed=0, **kw):
    keras.utils.set_random_seed(seed)
    model = tfcustom.models.get("cnn", num_classes=num_classes, **{**SMALL, **kw})
    model(tf.zeros((1, 28, 28, 1)), training=False)
    return model


def _perturb(model, seed=1):
    """Give every weight (BatchNorm statistics too) a distinctive value."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(0, 0.3, w.shape).astype("float32")
        w.assign(np.abs(v) + 0.5 if "variance" in w.path else v)


def _values(layer):
    return [w.numpy().copy() for w in layer.weights]


def _pipe(n=64, classes=5, batch=32):
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    return data_lib.InputPipeline(data_lib.Split(x, y), batch, shuffle=True, seed=0)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("source_kind", ["model", "keras_file"])
def test_restore_subset_copies_matched_layers_only(tmp_path, source_kind):
    source = _cnn(num_classes=10, seed=1)
    _perturb(source)
    target = _cnn(num_classes=10, seed=2)
    head_before = _values(target.get_layer("logits"))
    src = source
    if source_kind == "keras_file":
        source.save(str(tmp_path / "pre.keras"))
        src = str(tmp_path / "pre.keras")
    restored = restore_backbone(target, src, include=("stage*", "hidden"), exclude=("logits",))
    assert restored == ["stage0_conv0", "stage1_conv0", "hidden"]
    for name in restored:  # oracle: equal to the source's weights, BatchNorm statistics included
        for a, b in zip(target.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The head keeps its own initial weights, which differ from the source's.
    for before, now, src_w in zip(head_before, _values(target.get_layer("logits")), _values(source.get_layer("logits"))):
        np.testing.assert_array_equal(before, now)
        assert not np.allclose(now, src_w)


def test_restore_into_a_different_head_and_the_errors():
    source = _cnn(num_classes=10, seed=1)
    _perturb(source)
    target = _cnn(num_classes=5, seed=2)
    snapshot = [w.numpy().copy() for w in target.weights]
    # The default include="*" reaches the 5-way head: a shape mismatch, named, and nothing copied.
    with pytest.raises(ConfigError) as e:
        restore_backbone(target, source)
    msg = str(e.value)
    assert "'logits'" in msg and "(8, 5)" in msg and "(8, 10)" in msg and "exclude" in msg and "\n" not in msg
    for w, before in zip(target.weights, snapshot):
        np.testing.assert_array_equal(w.numpy(), before)
    # Excluding the head works.
    assert restore_backbone(target, source, exclude=("logits",)) == ["stage0_conv0", "stage1_conv0", "hidden"]
    # Layer names that match nothing: one clear error.
    with pytest.raises(ConfigError, match=r"restoring a backbone.*pattern 'encoder\*' matches no layer.*stage0_conv0"):
        restore_backbone(target, source, include=("encoder*",))
    # Layers that exist in the model but not in the source: nothing restored is an error too.
    other = tfcustom.models.get("logistic_regression", num_classes=10)
    other(tf.zeros((1, 28, 28, 1)))
    with pytest.raises(ConfigError, match="restoring a backbone whose layer names match nothing in the source"):
        restore_backbone(target, other, include=("stage*",))
    # A different architecture under the same layer name: the shapes are named.
    wide = _cnn(num_classes=5, filters=[6, 8])
    with pytest.raises(ConfigError, match=r"shape mismatch in layer 'stage0_conv0'.*\(3, 3, 1, 4\).*\(3, 3, 1, 6\)"):
        restore_backbone(target, wide, include=("stage0*",))
    with pytest.raises(ConfigError, match="does not exist"):
        restore_backbone(target, "/nonexistent/pre.keras")


def test_freeze_keeps_weights_through_a_fit_step_and_unfreeze_restores_training():
    model = _cnn()
    _perturb(model)
    assert freeze(model, ["stage*"]) == ["stage0_conv0", "stage1_conv0"]
    assert [l.trainable for l in model.layers] == [False, False, True, True, True]
    assert all("stage" not in v.path for v in model.trainable_variables)
    frozen = {n: _values(model.get_layer(n)) for n in ("stage0_conv0", "stage1_conv0")}
    head = _values(model.get_layer("logits"))
    Trainer(model, LOSS, keras.optimizers.Adam(1e-2), verbose=0).fit(_pipe(), 1)
    for name, before in frozen.items():  # every weight, BatchNorm moving statistics included
        for b, w in zip(before, model.get_layer(name).weights):
            np.testing.assert_array_equal(b, w.numpy())
    assert not np.allclose(head[0], model.get_layer("logits").weights[0].numpy())

    assert unfreeze(model, ["stage0*"]) == ["stage0_conv0"]
    Trainer(model, LOSS, keras.optimizers.Adam(1e-2), verbose=0).fit(_pipe(), 1)
    assert not np.allclose(frozen["stage0_conv0"][0], model.get_layer("stage0_conv0").weights[0].numpy())
    np.testing.assert_array_equal(frozen["stage1_conv0"][0], model.get_layer("stage1_conv0").weights[0].numpy())
    with pytest.raises(ConfigError, match=r"freeze: layer patterns: pattern 'backbone' matches no layer"):
        freeze(model, ["backbone"])


def test_backbone_learning_rate_zero_holds_the_backbone_still():
    model = _cnn()
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    opt = BackboneHeadOptimizer(keras.optimizers.Adam(0.0), keras.optimizers.Adam(1e-2), backbone=["stage*", "hidden"])
    trainer = Trainer(model, LOSS, opt, verbose=0)
    trainer.fit(_pipe(), 2)
    for v in model.trainable_variables:
        moved = not np.array_equal(before[v.path], v.numpy())
        assert moved == v.path.split("/")[1].startswith("logits"), v.path
    assert int(opt.iterations.numpy()) == 4 == int(opt.head_optimizer.iterations.numpy())
    assert trainer.history.records[-1]["learning_rate"] == pytest.approx(1e-2)


@pytest.mark.parametrize("make", [lambda lr: keras.optimizers.Adam(lr), lambda lr: tfcustom.optimizers.SGD(lr, momentum=0.9)])
def test_equal_learning_rates_match_a_single_optimizer(make):
    a, b = _cnn(seed=3), _cnn(seed=3)
    Trainer(a, LOSS, BackboneHeadOptimizer(make(1e-2), make(1e-2), backbone=["stage*"]), verbose=0).fit(_pipe(), 2)
    Trainer(b, LOSS, make(1e-2), verbose=0).fit(_pipe(), 2)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=0, atol=1e-6)


def test_backbone_head_optimizer_serializes():
    opt = BackboneHeadOptimizer(keras.optimizers.Adam(1e-4), keras.optimizers.SGD(0.1), backbone=["stage*", "hidden"])
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, BackboneHeadOptimizer) and again.backbone == ("stage*", "hidden")
    assert isinstance(again.backbone_optimizer, keras.optimizers.Adam) and isinstance(again.head_optimizer, keras.optimizers.SGD)
    assert float(again.backbone_optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="two distinct optimizer instances"):
        shared = keras.optimizers.Adam()
        BackboneHeadOptimizer(shared, shared)


def test_subset_classes_remaps_labels_and_samples_per_class():
    y = np.repeat(np.arange(10), 20).astype("int32")
    x = np.arange(200).reshape(200, 1, 1, 1).astype("uint8")
    few = subset_classes(data_lib.Split(x, y), [5, 6, 7, 8, 9], per_class=3, seed=0)
    assert len(few) == 15 and sorted(set(few.y.tolist())) == [0, 1, 2, 3, 4]
    assert np.all(y[few.x[:, 0, 0, 0]] == few.y + 5)
    assert np.array_equal(subset_classes(data_lib.Split(x, y), [5, 6, 7, 8, 9], per_class=3, seed=0).x, few.x)
