"""Run tfcustom.doctor on sound and planted-bug models in one process with 4 logical CPUs (tests/test_doctor.py).

Sound: a plain Keras functional model, and every shipped model (tfcustom.models.names()) with
every check, each its shipped architecture and regularisation (the configs' BatchNorm and
dropout) at small widths on 4x4x1 inputs. Prints one JSON object: scenario -> check name ->
[passed, measured, fix]."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tfcustom.distribute.strategy import configure_cpu_replicas

configure_cpu_replicas(4)

import keras  # noqa: E402

import doctor_models as dm  # noqa: E402
import tfcustom.doctor as doctor  # noqa: E402
from tfcustom import models  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# Shipped models as the configs train them (configs/*.flags: the MLP's dropout, the CNN's BatchNorm and
# dropout), narrow; the ResNet is BatchNorm throughout.
SHIPPED = {
    "logistic_regression": {},
    "mlp": dict(hidden_units=(8, 6), dropout=0.2),
    "cnn": dict(filters=(4, 8), dense_units=8, dropout=0.3, batch_norm=True),
    "resnet": dict(stage_filters=(4, 8)),
}
SCENARIOS = {
    # every check but xla (its compile costs ~10 s here; the CLI test does not run it either)
    "functional": dict(model_fn=dm.functional, checks=[c for c in doctor.CHECKS if c != "xla"]),
    "late_weight": dict(model_fn=dm.with_layer(dm.LateWeight), checks=["variables in scope"]),
    "dict_layers": dict(model_fn=dm.DictModel, checks=["checkpoint coverage"]),
    "one_replica_metric": dict(model_fn=dm.functional, metrics=lambda: [dm.FirstReplicaAccuracy()], checks=["exact metrics"]),
    "retracing_step": dict(model_fn=dm.functional, trainer_cls=dm.RetracingTrainer, checks=["retracing"]),
    "replica_state": dict(model_fn=dm.with_layer(dm.ReplicaCounter), checks=["replica state"]),
    "replica_mean_loss": dict(model_fn=dm.functional, trainer_cls=dm.ReplicaMeanLossTrainer, checks=["replica agreement"]),
    **{f"shipped:{name}": dict(model_fn=lambda name=name: models.get(name, 3, **SHIPPED[name])) for name in SHIPPED},
}


def main(names):
    out = {}
    for name in names:
        kwargs, start = dict(SCENARIOS[name]), time.perf_counter()
        report = doctor.check(kwargs.pop("model_fn"), LOSS, lambda: keras.optimizers.Adam(1e-2), dm.data(), **kwargs)
        out[name] = {r.name: [r.passed, r.measured, r.fix] for r in report.results}
        print(f"{name} ({time.perf_counter() - start:.0f} s)", report.table(), sep="\n", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:] or list(SCENARIOS))
