"""The experiment around the training engine, as flax's ``examples/mnist`` around its train step.

- `config`: ``TrainConfig``, every setting declared once and validated up front;
- `train`: ``train_and_evaluate(config, workdir)``, the one function behind ``tfcustom-train``;
- `builders`: one builder per object of a run (pipelines, model, loss, optimizer), from its config;
- `run_files`, `run_lock`, `run_checkpoints`, `run_dir`: the run directory (its files and bookkeeping, its lock,
  its checkpoints across workers, reading it back);
- `measured_settings`: the settings measured before a run (autotune, finders);
- `export`, `export_formats`, `prediction`: ``model.keras``, SavedModel, LiteRT, ONNX; evaluating a run without training;
  classifying images with an exported model;
- `autotune` (`autotune_decision`: its pure decision), `finders`, `lr_finder`, `batch_finder`: settings measured on the machine;
- `sweep`, `transfer` (`backbone`: restoring one), `user_model`, `plots`, `time_to_accuracy`.
"""
