"""Run tfcustom.doctor on sound and planted-bug models in one process with 4 logical CPUs (tests/test_doctor.py).

Prints one JSON object: scenario -> check name -> [passed, measured, fix]."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tfcustom.distribute.strategy import configure_cpu_replicas

configure_cpu_replicas(4)

import keras  # noqa: E402

import doctor_models as dm  # noqa: E402
import tfcustom.doctor as doctor  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SCENARIOS = {
    # every check but xla (its compile costs ~10 s here; the CLI test does not run it either)
    "functional": dict(model_fn=dm.functional, checks=[c for c in doctor.CHECKS if c != "xla"]),
    "late_weight": dict(model_fn=dm.with_layer(dm.LateWeight), checks=["variables in scope"]),
    "dict_layers": dict(model_fn=dm.DictModel, checks=["checkpoint coverage"]),
    "one_replica_metric": dict(model_fn=dm.functional, metrics=lambda: [dm.FirstReplicaAccuracy()], checks=["exact metrics"]),
    "retracing_step": dict(model_fn=dm.functional, trainer_cls=dm.RetracingTrainer, checks=["retracing"]),
    "replica_state": dict(model_fn=dm.with_layer(dm.ReplicaCounter), checks=["replica state"]),
}


def main(names):
    out = {}
    for name in names:
        kwargs = dict(SCENARIOS[name])
        report = doctor.check(kwargs.pop("model_fn"), LOSS, lambda: keras.optimizers.Adam(1e-2), dm.data(), **kwargs)
        out[name] = {r.name: [r.passed, r.measured, r.fix] for r in report.results}
        print(report.table(), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:] or list(SCENARIOS))
