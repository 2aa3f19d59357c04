"""Sharded TFRecords (in process): converter round trip, bad data, per-worker sharding, resume order, augmentation.

Oracles: the IDX arrays (NumPy), set arithmetic over example ids, NumPy
pad/slice/flip for augmentation, binomial/uniform statistics.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfcustom.data import InputPipeline, ShardedDataset, Split, from_numpy, load, split_validation
from tfcustom.data.augment import CROP_PAD, augment_batch, random_offsets_and_flips
from tfcustom.data.convert import convert, main as convert_main
from tfcustom.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def shards(tmp_path_factory, small_idx_dir):
    out = str(tmp_path_factory.mktemp("tfr") / "fm")
    convert("fashion_mnist", out, num_shards=5, data_dir=small_idx_dir)
    return out


def _decode_all(pipe, **kw):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in pipe.dataset(**kw)])
    return np.concatenate(xs), np.concatenate(ys)


def _ids(pipe, epoch=0, skip=0, ctx=None):
    return np.concatenate([b[-1].numpy() for b in pipe.replica_records(epoch, skip, ctx)])


def test_round_trip_equals_the_idx_arrays(shards, small_idx_dir):
    mem = load("fashion_mnist", small_idx_dir)
    ds = ShardedDataset.open(shards)
    spec = json.load(open(os.path.join(shards, "dataset.json")))
    assert [s["num_examples"] for s in spec["splits"]["train"]["shards"]] == [240] * 5
    assert spec["image_shape"] == [28, 28, 1] and spec["image_dtype"] == "uint8" and spec["class_names"] == list(mem.class_names)
    for split, arrays in (("train", mem.train), ("test", mem.test)):
        x, y = _decode_all(ds.pipeline(split, 64))  # file order, partial last batch kept
        np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), arrays.x)
        np.testing.assert_array_equal(y, arrays.y)


def test_rerun_refuses_a_non_empty_output_unless_overwrite(shards, small_idx_dir, capsys):
    assert convert_main(["--dataset=fashion_mnist", f"--data_dir={small_idx_dir}", f"--output_dir={shards}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: output directory is not empty") and "--overwrite" in err and "\n" not in err
    with pytest.raises(ConfigError, match="not empty"):
        convert("fashion_mnist", shards, 5, data_dir=small_idx_dir)


def _copy(src, dst):
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())
    return dst


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is truncated"),
    ("flip_byte", "fails its checksum"),
    ("no_spec", "no dataset.json"),
    ("extra_shard", "6 shard files on disk, 5 in dataset.json"),
    ("missing_shard", "4 shard files on disk, 5 in dataset.json"),
    ("count_mismatch", "shard counts add up to 1201"),
])
def test_bad_data_is_one_clear_error_before_training(shards, tmp_path, damage, message):
    d = _copy(shards, str(tmp_path / "bad"))
    shard = os.path.join(d, "train-00002-of-00005.tfrecord")
    if damage == "truncate":
        os.truncate(shard, os.path.getsize(shard) - 10)
    elif damage == "flip_byte":
        with open(shard, "r+b") as f:
            f.seek(500)
            b = f.read(1)
            f.seek(500)
            f.write(bytes([b[0] ^ 1]))
    elif damage == "no_spec":
        os.remove(os.path.join(d, "dataset.json"))
    elif damage == "extra_shard":
        _copy_file = os.path.join(d, "train-00005-of-00005.tfrecord")
        os.link(shard, _copy_file)
    elif damage == "missing_shard":
        os.remove(shard)
    elif damage == "count_mismatch":
        spec = json.load(open(os.path.join(d, "dataset.json")))
        spec["splits"]["train"]["shards"][0]["num_examples"] += 1
        json.dump(spec, open(os.path.join(d, "dataset.json"), "w"))
    with pytest.raises(DataError, match=message) as e:
        ShardedDataset.open(d)
    assert "\n" not in str(e.value) and d in str(e.value)


def test_flipped_byte_is_caught_by_the_record_crc_without_hashing(shards, tmp_path):
    d = _copy(shards, str(tmp_path / "bad"))
    with open(os.path.join(d, "test-00001-of-00005.tfrecord"), "r+b") as f:
        f.seek(300)
        f.write(b"\xff\xff")
    ds = ShardedDataset.open(d, verify="size")  # size is right: only the read finds it
    with pytest.raises(tf.errors.DataLossError):
        _decode_all(ds.pipeline("test", 50))


def test_two_workers_read_disjoint_shards_and_cover_each_example_once(shards, tmp_path):
    ds = ShardedDataset.open(shards, verify="size")
    pipe = ds.pipeline("train", 40, shuffle=True, seed=3, shuffle_buffer=100)  # 5 shards of 240 over 2 workers
    for epoch in (0, 1):
        files, ids = [], []
        for pid in range(2):
            ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
            segments = pipe.read_plan(epoch, 0, ctx)[0]
            files.append({(f, s, n) for f, s, n, _ in segments})
            ids.append(_ids(pipe, epoch, 0, ctx))
        assert len(ids[0]) == len(ids[1]) == 600
        np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(1200))  # each example once per epoch
        whole = [{f for f, s, n in fs if n == 240} for fs in files]
        assert not whole[0] & whole[1] and len(whole[0]) + len(whole[1]) == 4  # one shard is split in two record slices
    # Four equal shards over 2 workers: whole shards only (file-level sharding).
    x = np.arange(80, dtype=np.uint8).reshape(80, 1, 1, 1)
    out = str(tmp_path / "four")
    convert(from_numpy(x, np.arange(80) % 3, x, np.arange(80) % 3), out, num_shards=4)
    pipe4 = ShardedDataset.open(out).pipeline("train", 10, shuffle=True)
    plans = [pipe4.read_plan(2, 0, tf.distribute.InputContext(2, p, 2))[0] for p in range(2)]
    assert all(s == 0 and n == 20 for plan in plans for _, s, n, _ in plan) and len(plans[0]) == len(plans[1]) == 2
    assert not {p[0] for p in plans[0]} & {p[0] for p in plans[1]}


def test_epoch_order_is_seeded_and_skip_batches_resumes_it_without_reading_from_the_start(shards):
    ds = ShardedDataset.open(shards, verify="size")
    mask = ds.validation_mask(200, seed=5)
    pipe = ds.pipeline("train", 32, shuffle=True, seed=5, shuffle_buffer=100, keep=~mask)
    e0, e1 = _ids(pipe, 0), _ids(pipe, 1)
    np.testing.assert_array_equal(e0, _ids(pipe, 0))
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(np.sort(e0), np.flatnonzero(~mask))  # the training examples, each once
    for skip in (1, 3, 31):  # 31: the last (partial) step of the epoch
        np.testing.assert_array_equal(_ids(pipe, 1, skip), e1[skip * 32:])
        segments, read_from, _, _ = pipe.read_plan(1, skip)
        assert read_from == (skip * 32 // 100) * 100 and sum(n for _, _, n, _ in segments) < 1200 - read_from + 200
    # Memory and stream pick the same validation examples.
    x = np.arange(1200)
    _, val = split_validation(Split(x[:, None, None, None].astype(np.uint8), x % 10), 200, seed=5)
    np.testing.assert_array_equal(np.flatnonzero(mask) % 256, val.x[:, 0, 0, 0])


def test_partial_last_batch_is_split_like_the_in_memory_pipeline(shards):
    pipe = ShardedDataset.open(shards, verify="size").pipeline("test", 64)  # 300 = 4 * 64 + 44
    for pipelines, replicas in ((1, 4), (2, 4)):
        sizes = [[len(b[-1].numpy()) for b in pipe.replica_records(0, 0, tf.distribute.InputContext(pipelines, p, replicas))]
                 for p in range(pipelines)]
        per_replica = replicas // pipelines
        last = [s for p in range(pipelines) for s in sizes[p][-per_replica:]]
        assert last == [11, 11, 11, 11] and all(len(s) == 5 * per_replica for s in sizes)


def test_augmentation_statistics_and_pixels():
    ids = tf.range(20000, dtype=tf.int64)
    dy, dx, flip = (t.numpy() for t in random_offsets_and_flips(seed=1, epoch=0, index=ids))
    assert abs(flip.mean() - 0.5) < 4 * np.sqrt(0.25 / 20000)
    for d in (dy, dx):
        counts = np.bincount(d, minlength=2 * CROP_PAD + 1)
        expected = 20000 / (2 * CROP_PAD + 1)
        assert len(counts) == 2 * CROP_PAD + 1 and ((counts - expected) ** 2 / expected).sum() < 30  # chi2(8), p < 1e-3
    assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.05 and abs(np.corrcoef(dx, flip)[0, 1]) < 0.05
    assert (random_offsets_and_flips(1, 1, ids)[2].numpy() != flip).mean() > 0.4  # a new draw each epoch
    images = np.random.default_rng(0).integers(0, 255, (16, 6, 7, 2)).astype(np.uint8)
    out = augment_batch(tf.constant(images), ids[:16], 0, 1, ("crop", "flip")).numpy()
    padded = np.pad(images, [(0, 0), (CROP_PAD, CROP_PAD), (CROP_PAD, CROP_PAD), (0, 0)])
    for i in range(16):
        want = padded[i, dy[i]:dy[i] + 6, dx[i]:dx[i] + 7]
        np.testing.assert_array_equal(out[i], want[:, ::-1] if flip[i] else want)
    only_flip = augment_batch(tf.constant(images), ids[:16], 0, 1, ("flip",)).numpy()
    np.testing.assert_array_equal(only_flip, np.where(flip[:16, None, None, None], images[:, :, ::-1], images))


def test_augmented_examples_do_not_depend_on_batching_or_skip(shards):
    ds = ShardedDataset.open(shards, verify="size")
    pipe = ds.pipeline("train", 40, shuffle=True, seed=2, shuffle_buffer=200, augment="crop,flip")
    ids = _ids(pipe, 1)
    x_full = np.concatenate([x.numpy() for x, _ in pipe.dataset(1)])
    x_skip = np.concatenate([x.numpy() for x, _ in pipe.dataset(1, 7)])
    np.testing.assert_array_equal(x_skip, x_full[7 * 40:])
    x_rep = np.concatenate([x.numpy() for x, _ in pipe.dataset(1, 0, tf.distribute.InputContext(1, 0, 4))])
    np.testing.assert_array_equal(x_rep, x_full)  # 4 replicas: the same augmented examples
    # The in-memory pipeline augments the same example id the same way.
    raw = np.concatenate([x.numpy() for x, _ in ds.pipeline("train", 40).dataset()])
    mem_pipe = InputPipeline(Split(np.round(raw * 255).astype(np.uint8), np.zeros(1200, np.int32)), 40, shuffle=True, seed=2, augment=("crop", "flip"))
    order = mem_pipe.order(1)
    x_mem = np.concatenate([x.numpy() for x, _ in mem_pipe.dataset(1)])
    pos = {int(i): k for k, i in enumerate(ids)}
    np.testing.assert_array_equal(x_mem, x_full[[pos[int(i)] for i in order]])
