import numpy as np
import pytest
import tensorflow as tf

from tfcustom.data import InputPipeline, Split, from_numpy, split_validation
from tfcustom.errors import ConfigError, DataError


def _split(n=103, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 4, 4, 1), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256  # not unique past 256, so ids go in the labels
    return Split(x, np.arange(n, dtype=np.int32))


def _ids(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def test_validation_split_is_disjoint_complete_and_seeded():
    s = _split(1000)
    tr, va = split_validation(s, 100, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.y) | set(va.y) == set(range(1000)) and not set(tr.y) & set(va.y)
    tr2, va2 = split_validation(s, 100, seed=3)
    np.testing.assert_array_equal(va.y, va2.y)
    _, va3 = split_validation(s, 100, seed=4)
    assert set(va3.y) != set(va.y)
    assert split_validation(s, 0)[1] is None
    with pytest.raises(ConfigError, match="validation size"):
        split_validation(s, 1000)


def test_every_example_once_per_epoch_with_partial_batch_kept():
    p = InputPipeline(_split(103), batch_size=10, shuffle=True, seed=1)
    assert p.steps_per_epoch == 11
    sizes = [int(y.shape[0]) for _, y in p.dataset(0)]
    assert sizes == [10] * 10 + [3]
    for epoch in range(3):
        assert sorted(_ids(p.dataset(epoch))) == list(range(103))


def test_drop_remainder_is_a_choice():
    p = InputPipeline(_split(103), batch_size=10, drop_remainder=True)
    assert p.steps_per_epoch == 10
    assert len(_ids(p.dataset())) == 100


def test_seeded_order_new_each_epoch_and_repeatable():
    p = InputPipeline(_split(200), 16, shuffle=True, seed=7)
    a0, a1 = _ids(p.dataset(0)), _ids(p.dataset(1))
    assert not np.array_equal(a0, a1)
    np.testing.assert_array_equal(a0, _ids(InputPipeline(_split(200), 16, shuffle=True, seed=7).dataset(0)))
    assert not np.array_equal(a0, _ids(InputPipeline(_split(200), 16, shuffle=True, seed=8).dataset(0)))
    np.testing.assert_array_equal(_ids(InputPipeline(_split(50), 16).dataset(0)), np.arange(50))


def test_skip_batches_resumes_the_same_order():
    p = InputPipeline(_split(200), 16, shuffle=True, seed=7)
    full = _ids(p.dataset(2))
    np.testing.assert_array_equal(_ids(p.dataset(2, skip_batches=5)), full[80:])


def test_normalisation_to_unit_interval():
    s = _split(20)
    x, _ = next(iter(InputPipeline(s, 20).dataset()))
    assert x.dtype == tf.float32
    np.testing.assert_allclose(x.numpy(), s.x.astype(np.float32) / 255.0, rtol=0, atol=1e-7)


def test_sharded_pipelines_form_the_same_global_batches():
    p = InputPipeline(_split(128), 32, shuffle=True, seed=0)
    single = list(p.dataset(0))
    shards = [list(p.dataset(0, input_context=tf.distribute.InputContext(2, i, 2))) for i in range(2)]
    for step, (_, y) in enumerate(single):
        union = np.concatenate([shards[0][step][1].numpy(), shards[1][step][1].numpy()])
        assert sorted(union) == sorted(y.numpy())
        assert shards[0][step][1].shape[0] == 16


def test_batch_size_checks():
    with pytest.raises(ConfigError, match="larger than the dataset"):
        InputPipeline(_split(10), 11)
    with pytest.raises(ConfigError, match="positive integer"):
        InputPipeline(_split(10), 0)
    p = InputPipeline(_split(30), 9)
    with pytest.raises(ConfigError, match="divide evenly by the 2 replicas"):
        p.dataset(0, input_context=tf.distribute.InputContext(1, 0, 2))


def test_from_numpy_validates_labels_and_shapes():
    x = np.zeros((6, 3, 3), np.float32)
    ds = from_numpy(x, [0, 1, 2, 0, 1, 2], x, [0, 0, 1, 1, 2, 2])
    assert ds.num_classes == 3 and ds.input_shape == (3, 3, 1)
    with pytest.raises(DataError, match=r"labels outside \[0, 2\)"):
        from_numpy(x, [0, 1, 2, 0, 1, 2], x, [0] * 6, num_classes=2)
    with pytest.raises(DataError, match="differ in count"):
        from_numpy(x, [0, 1], x, [0] * 6)
    with pytest.raises(DataError, match="vector of class ids"):
        from_numpy(x, np.eye(6), x, [0] * 6)
    with pytest.raises(DataError, match="differ in shape"):
        from_numpy(x, [0] * 6, np.zeros((6, 4, 4)), [0] * 6)


def test_tfds_path_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    from tfcustom.data import load

    with tfds.testing.mock_data(num_examples=24):
        ds = load("tfds:mnist")
    assert ds.train.x.shape == (24, 28, 28, 1) and ds.test.x.shape == (24, 28, 28, 1)
    assert ds.num_classes == 10 and ds.train.y.dtype == np.int32
    assert ds.train.y.min() >= 0 and ds.train.y.max() < 10


def test_tfds_unknown_name():
    pytest.importorskip("tensorflow_datasets")
    from tfcustom.data import load

    with pytest.raises(ConfigError, match="unknown TFDS dataset"):
        load("tfds:no_such_dataset_xyz")


def test_the_pipeline_starts_no_autotuning_thread():
    """tf.data's autotuning thread loses its cancellation wake-up: deleting an autotuned
    iterator (the end of every epoch and evaluation) waited up to the iterator's age, 60 s at
    most (an epoch of 3 s: 2.1 s). The pipeline runs without one; its batches are unchanged
    (the tests above)."""
    pipe = InputPipeline(Split(np.zeros((8, 2, 2), np.uint8), np.arange(8)), batch_size=4)
    assert pipe.dataset().options().autotune.enabled is False
    assert [b[1].numpy().tolist() for b in pipe.dataset()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
