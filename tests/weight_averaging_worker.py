"""Trainer runs with EMA and SWA for tests/test_weight_averaging.py (not a test module).

``train(out, strategy, kill_at=None)``: a small Dense-BatchNorm-Dense model with
an ExponentialMovingAverage and a StochasticWeightAveraging (from epoch 2, its
own learning rate), a training checkpoint in ``out/checkpoints`` every ``EVERY`` steps
(restored if there is one); with ``kill_at`` the process SIGKILLs itself after
that global step (the newest checkpoint is then ``KILL_AT - 1``). The final
state (weights, BatchNorm statistics, both averages and counts, history) goes to
``out/final.npz``.

``batch_norm(out, strategy)``: BatchNorm statistics re-estimated under
``strategy``, with the inputs and weights a NumPy oracle needs, in ``out/bn.npz``.

usage: python tests/weight_averaging_worker.py kill|finish OUT_DIR   (2 logical CPUs)
  kill: 2 replicas, train(OUT/replicas2/killed, kill_at=KILL_AT);
  finish: 2 replicas, resume OUT/replicas2/killed, run OUT/replicas2/reference uninterrupted,
    batch_norm(OUT/replicas2); then 1 replica, train(OUT/replicas1/killed, kill_at=KILL_AT)
    (the test resumes that one and runs its reference in its own process).
"""

import json
import os
import signal
import sys

import numpy as np

D, K, BATCH, STEPS, EPOCHS = 5, 3, 16, 6, 3  # 96 training examples: 6 steps per epoch
EVERY = 4  # a checkpoint every 4 steps (and at each epoch end)
KILL_AT = 17  # epoch 3, step 5 (the newest checkpoint: step 4 of it): after SWA's first average (end of epoch 2)


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype("float32") * 2.0 + 1.0
    y = np.argmax(x @ rng.normal(size=(D, K)) + 0.5 * rng.normal(size=(n, K)), axis=1).astype("int32")
    return x, y


def bn_model(units=6):
    import keras

    from tfcustom.layers import BatchNormalization

    return keras.Sequential([keras.Input((D,)), keras.layers.Dense(units), keras.layers.BatchNormalization(),
                             keras.layers.ReLU(), keras.layers.Reshape((1, 1, units)), BatchNormalization(),
                             keras.layers.Flatten(), keras.layers.Dense(K)])


def trainer_with_averages(strategy):
    import keras

    from tfcustom import Trainer
    from tfcustom.callbacks import ExponentialMovingAverage, StochasticWeightAveraging

    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = bn_model()
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    averages = [ExponentialMovingAverage(decay=0.9), StochasticWeightAveraging(start_epoch=2, swa_lr=0.05)]
    return Trainer(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer, metrics=["accuracy"],
                   strategy=strategy, verbose=0, weight_averaging=averages)


def train(out, strategy, kill_at=None):
    import keras
    import tensorflow as tf

    from tfcustom.training.checkpoint import restore_latest, training_checkpoint
    from tfcustom.data import InputPipeline, Split

    trainer = trainer_with_averages(strategy)
    manager = tf.train.CheckpointManager(training_checkpoint(trainer), os.path.join(out, "checkpoints"), max_to_keep=2)
    with strategy.scope():
        restored = restore_latest(manager.checkpoint, manager)

    def on_train_batch_end(batch, logs):
        if kill_at is not None and int(trainer.global_step.numpy()) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    x, y = data()
    history = trainer.fit(InputPipeline(Split(x, y), BATCH, shuffle=True, seed=3), epochs=EPOCHS, checkpoint_manager=manager,
                          checkpoint_every_steps=EVERY, callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=on_train_batch_end)])
    ema, swa = trainer.weight_averaging
    arrays = {f"model_{i}": v.numpy() for i, v in enumerate(trainer.model.variables)}
    for name, average in (("ema", ema), ("swa", swa)):
        arrays.update({f"{name}_{i}": v.numpy() for i, v in enumerate(average.variables)})
        copies = [[np.asarray(c) for c in strategy.experimental_local_results(v)] for v in average.averages]
        arrays[f"{name}_replica_copies_equal"] = np.array([all(np.array_equal(c, cs[0]) for c in cs) for cs in copies])
        arrays[f"{name}_replica_copies"] = np.array(len(copies[0]))
    arrays["restored"] = np.array(os.path.basename(restored or ""))
    arrays["history"] = np.array(json.dumps([{k: v for k, v in r.items() if k != "time_s"} for r in history.records]))
    np.savez(os.path.join(out, "final.npz"), **arrays)


def batch_norm(out, strategy):
    import keras

    from tfcustom.data import InputPipeline, Split
    from tfcustom.training.batch_norm_stats import reestimate_batch_norm

    with strategy.scope():
        keras.utils.set_random_seed(2)
        model = bn_model()
    x, y = data(70, seed=4)  # 4 batches of 16 and one of 6 (3 + 3 on 2 replicas)
    batches = reestimate_batch_norm(model, InputPipeline(Split(x, y), BATCH), strategy=strategy)
    dense, bn1, bn2 = model.layers[0], model.layers[1], model.layers[4]
    replica_copies = [np.stack([np.asarray(c) for c in strategy.experimental_local_results(v.value)])
                      for v in (bn1.moving_mean, bn1.moving_variance)]
    np.savez(os.path.join(out, "bn.npz"), x=x, batches=batches, replicas=strategy.num_replicas_in_sync,
             kernel=dense.kernel.numpy(), bias=dense.bias.numpy(), gamma1=bn1.gamma.numpy(), beta1=bn1.beta.numpy(),
             mean1=bn1.moving_mean.numpy(), var1=bn1.moving_variance.numpy(), mean2=bn2.moving_mean.numpy(),
             var2=bn2.moving_variance.numpy(), copies_mean1=replica_copies[0], copies_var1=replica_copies[1])


def two_replicas():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mode, out_dir = sys.argv[1], sys.argv[2]
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # the killed and the uninterrupted run compare bitwise
    if mode == "replicas1":  # resume the 1-replica run the "finish" process killed, then the uninterrupted one
        for name in ("killed", "reference"):
            train(os.path.join(out_dir, "replicas1", name), tf.distribute.get_strategy())
        sys.exit(0)
    strategy = two_replicas()
    if mode == "kill":
        train(os.path.join(out_dir, "replicas2", "killed"), strategy, kill_at=KILL_AT)
        sys.exit(1)  # not reached: the run SIGKILLs itself
    train(os.path.join(out_dir, "replicas2", "killed"), strategy)  # resumes
    train(os.path.join(out_dir, "replicas2", "reference"), strategy)
    batch_norm(os.path.join(out_dir, "replicas2"), strategy)
    train(os.path.join(out_dir, "replicas1", "killed"), tf.distribute.get_strategy(), kill_at=KILL_AT)
    sys.exit(1)  # not reached
