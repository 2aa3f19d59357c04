"""Sizes and max abs logit diffs of LiteRT / ONNX exports of every shipped model (docs/guides/after_training.md)."""

import tempfile

import numpy as np

from tfcustom import models
from tfcustom.experiment.export_formats import export_formats

images = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype("float32")
print("| model | .tflite bytes | LiteRT max diff | .onnx bytes | ONNX max diff |")
for name in models.names():
    model = models.get(name, num_classes=10)
    model(images)
    r = export_formats(model, tempfile.mkdtemp(), ("litert", "onnx"), images)
    print(f"| {name} | {r['litert']['bytes']} | {r['litert']['max_abs_diff']:.2g} | {r['onnx']['bytes']} | "
          f"{r['onnx']['max_abs_diff']:.2g} |")
