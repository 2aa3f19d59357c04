"""tfcustom.experiment.autotune: the decision rule (fake timings), the timing (fake clock),
explicit settings bypass measurement, one real short measurement, and the
decision recorded in the run directory and reused on resume."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcustom import TrainConfig
from tfcustom.experiment import autotune
from tfcustom.experiment.autotune import AutotuneResult, Measurement, decide

F32, F32_XLA, BF16, BF16_XLA = "float32/jit=False", "float32/jit=True", "mixed_bfloat16/jit=False", "mixed_bfloat16/jit=True"
LOSSES = [2.30, 2.10, 1.90]


def _times(**step_ms):
    names = {"f32": F32, "f32_xla": F32_XLA, "bf16": BF16, "bf16_xla": BF16_XLA}
    out = {}
    for key, ms in step_ms.items():
        losses = LOSSES if not key.endswith("_bad") else [v * 1.2 for v in LOSSES]
        out[names[key.replace("_bad", "")]] = Measurement(ms / 1e3, 1.0, losses)
    return out


def test_xla_is_chosen_only_when_faster_by_the_margin():
    assert decide(_times(f32=10.0, f32_xla=5.0), "auto", "float32").jit_compile is True
    assert decide(_times(f32=10.0, f32_xla=9.8), "auto", "float32").jit_compile is False  # within 5 %: the default stays
    assert decide(_times(f32=5.0, f32_xla=10.0), "auto", "float32").jit_compile is False


def test_bfloat16_needs_speed_and_agreeing_losses():
    fast_bf16 = decide(_times(f32=10.0, f32_xla=12.0, bf16=6.0, bf16_xla=13.0))
    assert (fast_bf16.jit_compile, fast_bf16.precision) == (False, "mixed_bfloat16")
    assert fast_bf16.measurements[BF16]["losses_agree"] and fast_bf16.measurements[BF16]["max_loss_rel_diff"] == 0.0
    times = _times(f32=10.0, f32_xla=12.0, bf16_bad=6.0, bf16_xla_bad=5.0)
    wrong = decide(times)  # faster, but its losses are 20 % off (> 5 %): float32
    assert (wrong.jit_compile, wrong.precision) == (False, "float32")
    assert wrong.measurements[BF16]["losses_agree"] is False
    np.testing.assert_allclose(wrong.measurements[BF16]["max_loss_rel_diff"], 0.2)
    slow = decide(_times(f32=10.0, f32_xla=7.0, bf16=11.0, bf16_xla=9.0))
    assert (slow.jit_compile, slow.precision) == (True, "float32")


def test_measure_excludes_the_first_call_and_times_steps_with_the_clock():
    clock = iter(np.arange(0.0, 100.0, 1.0))  # every reading is 1 s after the previous one
    calls = []

    def train_step(iterator, num_steps):
        calls.append(int(num_steps))
        return {"loss": tf.constant(float(len(calls)))}

    compile_s, losses, run = autotune.measure(train_step, lambda: [], steps=4, loss_steps=3, timer=lambda: next(clock))
    assert compile_s == 1.0 and losses == [1.0, 2.0, 3.0]
    assert run() == 0.25 and calls == [1, 1, 1, 4]  # 1 s for 4 steps


def test_explicit_settings_and_short_runs_bypass_measurement():
    def build(policy):
        raise AssertionError("nothing should be built")

    given = autotune.tune(build, lambda: [], jit_compile=True, precision="float32")
    assert (given.jit_compile, given.precision, given.measurements) == (True, "float32", {})
    short = autotune.tune(build, lambda: [], train_steps=50)
    assert (short.jit_compile, short.precision) == (False, "float32") and "not measured" in short.reasons["jit_compile"]
    no_bf16 = autotune.tune(build, lambda: [], jit_compile=False, has_bf16=False)
    assert no_bf16.precision == "float32" and "without bfloat16" in no_bf16.reasons["precision"]


def test_cpu_has_bf16_reads_the_flags(tmp_path):
    with_flag, without = tmp_path / "a", tmp_path / "b"
    with_flag.write_text("processor : 0\nflags : fpu avx512f avx512_bf16 amx_tile\n")
    without.write_text("processor : 0\nflags : fpu avx512f\n")
    assert autotune.cpu_has_bf16(str(with_flag)) and not autotune.cpu_has_bf16(str(without))
    assert not autotune.cpu_has_bf16(str(tmp_path / "missing"))


def test_a_real_short_measurement_times_every_candidate():
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = (np.arange(64) % 3).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()

    def build(policy):
        keras.mixed_precision.set_global_policy(policy)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3, dtype="float32")])
        return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.optimizers.SGD(0.01)

    result = autotune.tune(build, lambda: data, steps=2, rounds=1, loss_steps=2, has_bf16=True)
    assert set(result.measurements) == {F32, F32_XLA, BF16, BF16_XLA}
    assert all(m["step_s"] > 0 and m["compile_s"] > 0 for m in result.measurements.values())
    for m in result.measurements.values():  # the one round's time is the best, so no spread
        assert m["step_s_rounds"] == [m["step_s"]] and m["spread"] == 0.0
    assert isinstance(result.jit_compile, bool) and result.precision in ("float32", "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's policy is put back


def test_the_decision_is_recorded_and_reused_on_resume(tmp_path, small_idx_dir):
    from tfcustom import data as data_lib
    from tfcustom.experiment.train import choose_settings, train_and_evaluate

    config = TrainConfig(model="mlp", model_kwargs={"hidden_units": [16]}, epochs=1, batch_size=100, validation_size=200,
                         data_dir=small_idx_dir, verbose=0, target_accuracy=0.05, target_accuracy_test=True)
    run = str(tmp_path / "run")
    results = train_and_evaluate(config, run)
    with open(os.path.join(run, autotune.AUTOTUNE_FILE)) as f:
        recorded = json.load(f)
    assert recorded == results["autotune"] and results["jit_compile"] is False  # 10 steps: too short to measure
    assert "not measured" in recorded["reasons"]["jit_compile"]
    # A resumed run reads the run's decision back (nothing measured), and an explicit flag still wins.
    stored = AutotuneResult(True, "mixed_bfloat16", {}, {"jit_compile": "x", "precision": "x"})
    autotune.save(stored, run)
    dataset = data_lib.load("fashion_mnist", small_idx_dir)
    pipeline = data_lib.InputPipeline(dataset.train, 100)
    strategy = tf.distribute.get_strategy()
    resumed = choose_settings(config, run, True, strategy, dataset, pipeline)
    assert (resumed.jit_compile, resumed.precision) == (True, "mixed_bfloat16")
    forced = choose_settings(config.replace(jit_compile=False), run, True, strategy, dataset, pipeline)
    assert (forced.jit_compile, forced.precision) == (False, "mixed_bfloat16")
    # --target_accuracy: epoch 1 reaches 5 % on validation and test (10 classes).
    tta = results["time_to_accuracy"]
    history = results["history"]
    assert set(tta) == {"validation", "test"}
    for split, key in (("validation", "val_accuracy"), ("test", "test_accuracy")):
        assert tta[split]["reached"] and tta[split]["epoch"] == 1 and tta[split]["step"] == 10
        assert tta[split]["accuracy"] == history[0][key] and tta[split]["time_s"] == history[0]["time_s"]


def test_first_reached_against_hand_computed_records():
    from tfcustom.experiment.time_to_accuracy import first_reached

    records = [{"epoch": 1, "time_s": 3.0, "val_accuracy": 0.80}, {"epoch": 2, "time_s": 4.0, "val_accuracy": 0.93},
               {"epoch": 3, "time_s": 5.0, "val_accuracy": 0.92}, {"epoch": 4, "time_s": 5.0, "val_accuracy": 0.95}]
    assert first_reached(records, "val_accuracy", 0.9, 100) == {
        "target": 0.9, "reached": True, "epoch": 2, "step": 200, "time_s": 7.0, "accuracy": 0.93}
    assert first_reached(records, "val_accuracy", 0.94)["time_s"] == 17.0
    never = first_reached(records, "val_accuracy", 0.99)
    assert never == {"target": 0.99, "reached": False, "best_accuracy": 0.95, "time_s_total": 17.0}


@pytest.mark.parametrize("value", ["yes", 2, None])
def test_config_rejects_other_jit_compile_values(value):
    from tfcustom.errors import ConfigError

    with pytest.raises(ConfigError, match="jit_compile"):
        TrainConfig(jit_compile=value).validate()


def test_jit_compile_flag_takes_auto_true_false_and_the_boolean_forms():
    import copy

    from absl import flags

    from tfcustom.cli import train as cli

    values = flags.FlagValues()
    flags.DEFINE_flag(copy.deepcopy(cli.FLAGS["jit_compile"]), flag_values=values)
    for argv, expected in (([], "auto"), (["--jit_compile"], True), (["--nojit_compile"], False),
                           (["--jit_compile=auto"], "auto"), (["--jit_compile=false"], False), (["--jit_compile=true"], True)):
        values.unparse_flags()
        values(["prog"] + argv)
        assert values.jit_compile == expected, argv
    values.unparse_flags()
    with pytest.raises(flags.IllegalFlagValueError, match="auto, true or false"):
        values(["prog", "--jit_compile=maybe"])


def test_deterministic_runs_do_not_measure_even_when_a_candidate_would_win():
    # A clock under which XLA and bfloat16 would be much faster: without
    # --deterministic the choice follows it; with it nothing is built or timed.
    def build(policy):
        raise AssertionError("a deterministic run must not measure")

    result = autotune.tune(build, lambda: [], train_steps=10_000, has_bf16=True, deterministic=True)
    assert (result.jit_compile, result.precision, result.measurements) == (False, "float32", {})
    assert "deterministic" in result.reasons["jit_compile"] and "deterministic" in result.reasons["precision"]
    named = autotune.tune(build, lambda: [], jit_compile=True, precision="mixed_bfloat16", deterministic=True)
    assert (named.jit_compile, named.precision) == (True, "mixed_bfloat16")  # the user named them: kept


def test_the_same_deterministic_command_twice_gives_bitwise_equal_weights(tmp_path, small_idx_dir):
    from process_helpers import assert_same_weights
    from tfcustom.experiment.train import train_and_evaluate

    # 1000 images / batch 8 x 8 epochs = 1000 steps: long enough for autotune to be active.
    config = TrainConfig(model="mlp", model_kwargs={"hidden_units": [16]}, epochs=8, batch_size=8, validation_size=200,
                         data_dir=small_idx_dir, verbose=0, seed=3, deterministic=True)
    runs = [str(tmp_path / name) for name in ("a", "b")]
    results = [train_and_evaluate(config, run) for run in runs]
    for r in results:
        assert "deterministic" in r["autotune"]["reasons"]["jit_compile"]  # autotune ran, chose without timing
        assert (r["jit_compile"], r["autotune"]["precision"]) == (False, "float32")
    assert_same_weights(runs[0], runs[1])


def test_autotune_from_replays_another_runs_decision(tmp_path, small_idx_dir):
    from tfcustom import data as data_lib
    from tfcustom.errors import TfcustomError
    from tfcustom.experiment.train import choose_settings

    other = tmp_path / "other"
    other.mkdir()
    autotune.save(AutotuneResult(True, "mixed_bfloat16", {F32: {"step_s": 1.0}}, {"jit_compile": "m", "precision": "m"}), str(other))
    (tmp_path / "results.json").write_text(json.dumps({"autotune": AutotuneResult(True, "float32").to_dict()}))
    dataset = data_lib.load("fashion_mnist", small_idx_dir)
    pipeline = data_lib.InputPipeline(dataset.train, 100)
    strategy = tf.distribute.get_strategy()
    # 1200 steps with "auto" would measure; replaying takes the other run's choice, measuring nothing.
    config = TrainConfig(model="mlp", epochs=100, batch_size=100, data_dir=small_idx_dir, autotune_from=str(other))
    for source, expected in ((other, (True, "mixed_bfloat16")), (other / autotune.AUTOTUNE_FILE, (True, "mixed_bfloat16")),
                             (tmp_path / "results.json", (True, "float32"))):
        chosen = choose_settings(config.replace(autotune_from=str(source)), str(tmp_path / "run"), False, strategy, dataset, pipeline)
        assert (chosen.jit_compile, chosen.precision) == expected and "replayed" in chosen.reasons["precision"]
    named = choose_settings(config.replace(jit_compile=False, precision="float32"), str(tmp_path / "run"), False, strategy, dataset, pipeline)
    assert (named.jit_compile, named.precision) == (False, "float32")  # explicit settings win over the replay
    with pytest.raises(TfcustomError, match="no autotune decision"):
        choose_settings(config.replace(autotune_from=str(tmp_path / "missing")), str(tmp_path / "run"), False, strategy, dataset, pipeline)


def test_the_spread_of_the_rounds_is_recorded():
    times = {F32: Measurement(0.010, 1.0, LOSSES, [0.012, 0.010, 0.011]), F32_XLA: Measurement(0.020, 1.0, LOSSES, [0.020, 0.030])}
    measured = decide(times, "auto", "float32").measurements
    assert measured[F32]["step_s_rounds"] == [0.012, 0.010, 0.011] and measured[F32]["spread"] == pytest.approx(0.2)
    assert measured[F32_XLA]["spread"] == pytest.approx(0.5)
