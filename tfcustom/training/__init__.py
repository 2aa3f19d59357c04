"""The training engine: the compiled steps, the Trainer's loop, and what they are made of.

The loop and its inputs:

- `trainer`: ``Trainer`` (``fit``/``evaluate``/``predict``), the thin loop around the steps;
- `loop`: ``fit``'s epochs and steps, and the built-in callbacks they run (``loop_callbacks``; the callbacks are `tfcustom.callbacks`');
- `metric_state`: the logs from the metrics, and their training state while an evaluation shows in them;
- `steps`: ``make_train_step``/``make_test_step``/``make_predict_step``, one GradientTape implementation for every strategy;
- `checked_step`: the step's call with its arguments checked first; `scope_checks`: objects built under the strategy;
- `fit_inputs`, `distributed_input`: what ``keras.Model.fit`` takes as data, as per-replica batches;
- `compile_args`, `compile_loss`, `compile_metrics`: what ``keras.Model.compile`` takes, resolved as it does;
- `checkpoint`: the training checkpoint (everything the next step depends on); `history`, `logs` (`timing`: moved to `tfcustom.callbacks.timing`).

The step's pieces, one concept per module, composed by `tfcustom.training.steps.make_train_step`:

- `replica_step`: one replica's part: its batch, forward and backward pass, loss and metrics;
- `gradient_reduction`: sum the replicas' gradients (one packed all-reduce, or one reduce per variable), clip, check;
- `loss_scaling`: the dynamic loss scale of mixed float16 (Keras' ``LossScaleOptimizer``'s bookkeeping);
- `replica_state`, `replica_sync`: the state a forward pass changes (BatchNorm statistics), kept equal across replicas;
- `sam`: Sharpness-Aware Minimization, a ``gradient_fn`` for the step;
- `input_wait`: the seconds a step waits for its batch;
- `loop_fns`: several steps in one ``tf.function`` call (``steps_per_execution``), as Orbit's ``loop_fns``.
"""
