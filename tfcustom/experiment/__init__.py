"""The experiment around the training engine: config, train_and_evaluate, run directory, export."""
