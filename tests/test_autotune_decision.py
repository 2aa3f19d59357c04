"""The autotune decision on synthetic interleaved rounds (no timing): the median of paired
per-round ratios, the warm-up round dropped, the jit and precision margins, and decisions
recorded by earlier versions (best of 3 rounds) still loading and replaying exactly."""

import json

import numpy as np
import pytest

from tfcustom import TrainConfig
from tfcustom.experiment import autotune
from tfcustom.experiment.autotune import Measurement, decide, paired_ratio

F32, F32_XLA, BF16, BF16_XLA = "float32/jit=False", "float32/jit=True", "mixed_bfloat16/jit=False", "mixed_bfloat16/jit=True"
LOSSES = [2.30, 2.10, 1.90]
# The default's seconds per step in 5 interleaved rounds: a warm-up 2.5x slower, then steady.
DEFAULT_ROUNDS = [0.050, 0.020, 0.021, 0.019, 0.020]


def _measurement(rounds):
    return Measurement(min(rounds), 1.0, LOSSES, list(rounds))


def _times(default_rounds=DEFAULT_ROUNDS, **ratios):
    """``{candidate: Measurement}``: each candidate's round i is the default's round i times its ratio
    (one number for every round, or one per round); candidates not named are 3x slower."""
    names = {"f32_xla": F32_XLA, "bf16": BF16, "bf16_xla": BF16_XLA}
    times = {F32: _measurement(default_rounds)}
    for key, name in names.items():
        ratio = np.broadcast_to(np.asarray(ratios.get(key, 3.0), np.float64), (len(default_rounds),))
        times[name] = _measurement([float(d * r) for d, r in zip(default_rounds, ratio)])
    return times


def _choice(result):
    return f"{result.precision}/jit={result.jit_compile}"


def test_bfloat16_needs_the_precision_margin():
    assert _choice(decide(_times(bf16=0.88))) == F32  # 12 % faster: within the 20 % precision margin
    assert _choice(decide(_times(bf16=0.7))) == BF16
    assert _choice(decide(_times(bf16=0.81))) == F32 and _choice(decide(_times(bf16=0.79))) == BF16
    assert _choice(decide(_times(bf16=0.88), precision_margin=0.1)) == BF16  # the margin is a parameter


def test_xla_needs_only_the_jit_margin():
    assert _choice(decide(_times(f32_xla=0.9))) == F32_XLA  # 10 % faster: beyond the 5 % margin
    assert _choice(decide(_times(f32_xla=0.97))) == F32
    assert _choice(decide(_times(f32_xla=0.9), "auto", "float32")) == F32_XLA
    # bfloat16 is compared with the float32 choice (XLA here): x0.7 of no XLA is x0.78 of XLA's 0.9.
    assert _choice(decide(_times(f32_xla=0.9, bf16=0.7))) == BF16
    assert _choice(decide(_times(f32_xla=0.9, bf16=0.75))) == F32_XLA


def test_a_slow_warm_up_round_does_not_flip_the_decision():
    # bfloat16's first round is half the default's (its warm-up is lighter), the steady rounds x0.95:
    # the first round is dropped, so float32 stays; and an XLA warm-up 5x slower does not hide x0.9.
    warm = decide(_times(bf16=[0.5, 0.95, 0.95, 0.95, 0.95], f32_xla=[5.0, 0.9, 0.9, 0.9, 0.9]))
    assert _choice(warm) == F32_XLA
    assert warm.measurements[BF16]["ratio"] == pytest.approx(0.95)
    assert warm.measurements[F32_XLA]["ratio"] == pytest.approx(0.9)
    assert warm.measurements[BF16]["ratio_rounds"][0] == pytest.approx(0.5)  # recorded, not used


def test_drift_common_to_both_candidates_in_a_round_does_not_flip_it():
    # Round 3 (the machine busy) is 3x slower for every candidate: the paired ratios do not move.
    drifted = [0.050, 0.020, 0.063, 0.019, 0.020]
    for ratios, expected in (({"f32_xla": 0.9}, F32_XLA), ({"bf16": 0.88}, F32), ({"bf16": 0.7}, BF16)):
        steady, busy = decide(_times(**ratios)), decide(_times(drifted, **ratios))
        assert _choice(steady) == _choice(busy) == expected
        for name in (F32_XLA, BF16):
            assert busy.measurements[name]["ratio"] == pytest.approx(steady.measurements[name]["ratio"])


def test_the_median_of_the_kept_ratios_against_a_hand_computation():
    default, candidate = _measurement([0.04, 0.020, 0.020, 0.020, 0.020]), _measurement([0.02, 0.018, 0.030, 0.016, 0.019])
    # Ratios 0.5 | 0.9, 1.5, 0.8, 0.95: the median of the last four is (0.9 + 0.95) / 2.
    assert paired_ratio(candidate, default) == pytest.approx(0.925)
    assert paired_ratio(_measurement([0.03, 0.018]), _measurement([0.06, 0.020])) == pytest.approx(0.7)  # 2 rounds: both kept
    assert paired_ratio(Measurement(0.9, 1.0), Measurement(1.0, 1.0)) == pytest.approx(0.9)  # no rounds: the step times


def test_the_reason_states_the_ratios_and_the_margins():
    reason = decide(_times(f32_xla=0.9, bf16=0.88)).reasons["precision"]
    assert f"{F32_XLA} 18.00 ms/step x0.90" in reason and f"{BF16} 17.60 ms/step x0.88" in reason
    assert "XLA must reach x0.95, bfloat16 x0.80 of the float32 choice (float32/jit=True)" in reason
    assert f"{BF16} x0.98 of {F32_XLA}" in reason  # the ratio the precision margin was applied to
    assert "first round dropped as warm-up" in reason and "can differ between runs" in reason
    assert reason.endswith("--deterministic does not measure") and f"chose {F32_XLA};" in reason


# An autotune.json written before the paired-ratio rule (best of 3 rounds, 5 % margin for every candidate).
OLD_DECISION = {
    "jit_compile": False, "precision": "mixed_bfloat16",
    "measurements": {
        F32: {"step_s": 0.01875, "compile_s": 2.67, "step_s_rounds": [0.04534, 0.01875, 0.01899], "spread": 1.418},
        F32_XLA: {"step_s": 0.04742, "compile_s": 1.86, "step_s_rounds": [0.06829, 0.04857, 0.04742], "spread": 0.44},
        BF16: {"step_s": 0.01668, "compile_s": 0.62, "step_s_rounds": [0.05264, 0.01668, 0.01679], "spread": 2.156,
               "losses_agree": True, "max_loss_rel_diff": 0.0185},
        BF16_XLA: {"step_s": 0.05341, "compile_s": 2.15, "step_s_rounds": [0.05356, 0.05341, 0.05388], "spread": 0.0087,
                   "losses_agree": True, "max_loss_rel_diff": 0.0038},
    },
    "reasons": {key: "measured: float32/jit=False 18.75 ms/step (compile 2.7 s), ...; chose mixed_bfloat16/jit=False "
                     "(a candidate must beat float32/jit=False by 5%; bfloat16 only if its first losses agree within 0.05)"
                for key in ("jit_compile", "precision")},
    "finders": {},
}


def test_an_old_format_decision_loads_and_replays_exactly(tmp_path):
    from tfcustom.experiment.measured_settings import _recorded_settings

    run = tmp_path / "run"
    run.mkdir()
    (run / autotune.AUTOTUNE_FILE).write_text(json.dumps(OLD_DECISION, indent=2))
    assert autotune.load(str(run)).to_dict() == OLD_DECISION  # a resumed run keeps it, measurements and reasons too
    config = TrainConfig(model="mlp", epochs=100, autotune_from=str(run))
    resumed = _recorded_settings(config.replace(autotune_from=None), str(run), True, None)
    assert resumed.to_dict() == OLD_DECISION
    for source in (run, run / autotune.AUTOTUNE_FILE):
        replayed = _recorded_settings(config.replace(autotune_from=str(source)), str(tmp_path / "new"), False, None)
        assert (replayed.jit_compile, replayed.precision, replayed.measurements) == (False, "mixed_bfloat16",
                                                                                      OLD_DECISION["measurements"])
        assert replayed.reasons["precision"].startswith("replayed from")
