"""The experiment around the training engine, as flax's ``examples/mnist`` around its train step.

- `config`: ``TrainConfig``, every setting declared once and validated up front;
- `train`: ``train_and_evaluate(config, workdir)``, the one function behind ``tfcustom-train``;
- `run_dir`, `run_files`, `run_lock`: the run directory (its files, its lock, reading them back);
- `export`, `export_formats`: ``model.keras``, SavedModel, LiteRT, ONNX; evaluating a run without training;
- `autotune`, `finders`, `lr_finder`, `batch_finder`: settings measured on the machine;
- `sweep`, `transfer`, `user_model`, `plots`, `time_to_accuracy`.
"""
