"""Damaged run files are refused: one line naming the file and the fix, exit 2, nothing overwritten.

One finished run of the trainer CLI is shared; each case damages a copy of it
(made unfinished, so that the same command would resume it and read every
file) and resumes in-process, except the CLI case, which checks the exit code
and the single line. The oracle is the file system: the damaged copy's bytes
before and after.
"""

import json
import os
import re

import pytest

from fault_helpers import copy_run, error_lines, fingerprint, tiny_args
from resume_helpers import run
from tfcustom.experiment.config import TrainConfig
from tfcustom.errors import TfcustomError
from tfcustom.experiment.train import train_and_evaluate


@pytest.fixture
def finished(tiny_run_dir):
    """The shared finished run (see conftest.py); each case damages a copy."""
    return tiny_run_dir


def _truncate(path, keep=0.5):
    """Keep the first ``keep`` of the file (a fraction) or the first ``keep`` bytes (an int)."""
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def _edit_json(path, edit):
    value = json.load(open(path))
    edit(value)
    json.dump(value, open(path, "w"))


DAMAGES = {
    "config.json": (lambda d: _truncate(os.path.join(d, "config.json")), r"config\.json is damaged \(not valid JSON"),
    "history.json": (lambda d: _truncate(os.path.join(d, "history.json")), r"history\.json is damaged \(not valid JSON"),
    "history.json records": (lambda d: _edit_json(os.path.join(d, "history.json"), lambda v: v.__setitem__(0, 7)),
                             r"history\.json is damaged \(every record"),
    "autotune.json": (lambda d: _truncate(os.path.join(d, "autotune.json")), r"autotune\.json is damaged \(not valid JSON"),
    "autotune.json fields": (lambda d: _edit_json(os.path.join(d, "autotune.json"), lambda v: v.pop("precision")),
                             r"autotune\.json is damaged \(not an autotune decision"),
    # Cut inside its second line (a cut at a line end is a valid index naming fewer checkpoints).
    "checkpoint index": (lambda d: _truncate(os.path.join(d, "checkpoints", "checkpoint"), 45),
                         r'checkpoint index checkpoint is damaged.*model_checkpoint_path: "ckpt-14"'),
    "best checkpoint index": (lambda d: open(os.path.join(d, "checkpoints", "best", "checkpoint"), "w").write("x"),
                              r"checkpoint index checkpoint is damaged.*best"),
    "checkpoint index missing": (lambda d: os.remove(os.path.join(d, "checkpoints", "checkpoint")),
                                 r"checkpoint index checkpoint is missing beside 3 checkpoints"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_run_file_is_one_line_and_nothing_is_written(finished, tmp_path, damage):
    d = copy_run(finished, tmp_path / "run")
    config = TrainConfig.read(os.path.join(finished, "config.json"))
    apply, message = DAMAGES[damage]
    apply(d)
    before = fingerprint(d)
    with pytest.raises(TfcustomError, match=message) as e:
        train_and_evaluate(config, d)
    assert "\n" not in str(e.value) and d in str(e.value) and re.search(r"overwrite|restore", str(e.value), re.I)
    assert fingerprint(d) == before  # nothing overwritten, nothing added (the lock is gone again)


def test_a_damaged_results_json_names_the_way_to_export_again(finished, tmp_path):
    d = copy_run(finished, tmp_path / "run", unfinished=False)
    _truncate(os.path.join(d, "results.json"))
    before = fingerprint(d)
    with pytest.raises(TfcustomError, match=r"results\.json is damaged.*Delete it and rerun the same command"):
        train_and_evaluate(TrainConfig.read(os.path.join(d, "config.json")), d)
    assert fingerprint(d) == before
    from tfcustom.experiment.export import load_run_model

    with pytest.raises(TfcustomError, match=r"results\.json is damaged"):  # evaluate.py / predict.py
        load_run_model(d, "latest")


def test_checkpoint_of_other_variables_is_refused(finished, tmp_path):
    """config.json says hidden_units [8] (edited, or copied beside another run's checkpoints):
    the config matches, the checkpoint's variables do not."""
    d = copy_run(finished, tmp_path / "run")
    _edit_json(os.path.join(d, "config.json"), lambda v: v.__setitem__("model_kwargs", {"hidden_units": [8]}))
    config = TrainConfig.read(os.path.join(d, "config.json"))
    before = fingerprint(d)
    with pytest.raises(TfcustomError, match=r"checkpoint .*ckpt-14 does not fit this model.*\(784, 16\).*--overwrite"):
        train_and_evaluate(config, d)
    assert fingerprint(d) == before
    other = TrainConfig.from_dict(dict(config.to_dict(), model_kwargs={"hidden_units": [16, 16]}))
    with pytest.raises(TfcustomError, match=r"cannot resume: the config differs.*model_kwargs"):  # another --model_kwargs
        train_and_evaluate(other, d)
    assert fingerprint(d) == before


def test_hand_edited_dataset_json_is_refused(small_idx_dir, tmp_path):
    from tfcustom.data import load
    from tfcustom.data.convert import convert

    shards = str(tmp_path / "shards")
    convert(load("fashion_mnist", small_idx_dir), shards, num_shards=2)
    config = TrainConfig(model="mlp", dataset=f"tfrecord:{shards}", epochs=1, validation_size=100)
    for edit in (lambda s: s.__setitem__("image_shape", [784]), lambda s: s.__setitem__("num_classes", 5)):
        _edit_json(os.path.join(shards, "dataset.json"), edit)
        before = fingerprint(shards)
        with pytest.raises(TfcustomError, match=r"dataset\.json was changed after the conversion.*tfcustom\.data\.convert"):
            train_and_evaluate(config, str(tmp_path / "out"))
        assert fingerprint(shards) == before and not os.path.exists(tmp_path / "out")


def test_the_cli_exits_2_with_one_line(finished, tmp_path, small_idx_dir):
    d = copy_run(finished, tmp_path / "run")
    _truncate(os.path.join(d, "checkpoints", "checkpoint"), 45)
    before = fingerprint(d)
    r = run(tiny_args(small_idx_dir, d))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: the checkpoint index checkpoint is damaged"), r.stderr[-3000:]
    assert fingerprint(d) == before
