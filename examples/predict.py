"""Classify PNG images or IDX files with an exported model.

    python examples/predict.py --model=runs/cnn/model.keras --images=shoe.png,shirt.png
    python examples/predict.py --model=runs/cnn/saved_model --idx=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --limit=10

``--model`` is a ``.keras`` file or a SavedModel directory (both written by
``tfcustom.experiment.export.export_model``, e.g. at the end of training). PNGs are read
as grey, resized to the model's input size (28x28) and scaled to [0, 1];
Fashion-MNIST shows light garments on black. Class names come from the run's
``results.json`` next to the model, else Fashion-MNIST's.

Prints one line per image: ``<image>\t<class name>\t<probability>``.
Exit codes: 0 done, 2 bad flags / model / images.
"""

import os
import sys

from absl import app, flags

from tfcustom.cli import parse_flags

flags.DEFINE_string("model", None, "A .keras file or a SavedModel directory.")
flags.DEFINE_list("images", [], "PNG files (comma-separated).")
flags.DEFINE_string("idx", None, "An IDX images file (.gz or plain), e.g. t10k-images-idx3-ubyte.gz.")
flags.DEFINE_integer("limit", 10, "With --idx: classify the first N images.")
FLAGS = flags.FLAGS


def main(argv):
    images = list(FLAGS.images) + list(argv[1:])  # also accept `--images a.png b.png`
    from tfcustom.errors import TfcustomError, format_error
    from tfcustom.experiment import export

    if not FLAGS.model:
        print("error: " + format_error("--model is required", None, "pass a .keras file or a SavedModel directory"), file=sys.stderr)
        return 2
    if bool(images) == bool(FLAGS.idx):
        print("error: " + format_error("pass either --images or --idx", {"images": images, "idx": FLAGS.idx},
                                       "e.g. --images=a.png,b.png or --idx=t10k-images-idx3-ubyte.gz --limit=10"), file=sys.stderr)
        return 2
    try:
        predictor = export.load_predictor(FLAGS.model)
        if FLAGS.idx:
            x = export.read_idx_images(FLAGS.idx, FLAGS.limit)
            names = [f"{os.path.basename(FLAGS.idx)}[{i}]" for i in range(len(x))]
        else:
            x = export.read_png_images(images, size=predictor.input_shape[:2], channels=predictor.input_shape[-1])
            names = images
        out = export.predict(predictor, x)
    except TfcustomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, label, cid, p in zip(names, out["class_names"], out["class_ids"], out["probabilities"]):
        print(f"{name}\t{label}\t{p[cid]:.4f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, flags_parser=parse_flags)
