"""The training step's pieces, one concept per module, composed by `tfcustom.steps.make_train_step`:

- `gradient_reduction`: sum the replicas' gradients (one packed all-reduce, or one reduce per variable), clip, check;
- `loss_scaling`: the dynamic loss scale of mixed float16 (Keras' ``LossScaleOptimizer``'s bookkeeping);
- `replica_state`: the state a forward pass changes (BatchNorm statistics), kept to undo a skipped step;
- `input_wait`: the seconds a step waits for its batch;
- `loop_fns`: several steps in one ``tf.function`` call (``steps_per_execution``), as Orbit's ``loop_fns``.
"""
