"""The fine-tuning lesson: pretrain, then fine-tune on 100 labelled images per class.

    python examples/transfer_learning.py                       # ~5 minutes on 2 busy CPU cores
    python examples/transfer_learning.py --head_epochs=5 --backbone_learning_rate=1e-4   # freeze first, slower backbone

1. Pretrain the CNN (``--model_kwargs``, default filters 16/32) on the 30000
   Fashion-MNIST training images of classes 0-4 (T-shirt/top, Trouser,
   Pullover, Dress, Coat).
2. For each seed: draw 100 labelled images per class of classes 5-9 (Sandal,
   Shirt, Sneaker, Bag, Ankle boot) and
   * fine-tune a new CNN with a 5-way head whose backbone (``stage*``,
     ``hidden``) is restored from the pretrained one: optionally
     ``--head_epochs`` with the backbone frozen, then ``--finetune_epochs``
     with everything trainable (backbone at ``--backbone_learning_rate``,
     head at ``--learning_rate``);
   * train the same model from scratch on the same 500 images
     (``--scratch_epochs``, default: as many epochs as fine-tuning).

Both are tested on the 5000 test images of classes 5-9 (measured results:
docs/transfer_learning.md). The logic is
:func:`tfcustom.experiment.transfer.transfer_experiment`; this file only reads flags.
Exit codes: 0 done, 2 bad flags / data.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

from tfcustom.cli import parse_flags

flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory (default: $TFCUSTOM_DATA_DIR, then /usr/share/datasets/fashion-mnist).")
flags.DEFINE_integer("shots", 100, "Labelled training images per target class.")
flags.DEFINE_integer("pretrain_epochs", 3, "Epochs of pretraining on classes 0-4 (30000 images).")
flags.DEFINE_integer("head_epochs", 0, "Fine-tuning epochs with the backbone frozen (head only) first.")
flags.DEFINE_float("head_learning_rate", 1e-2, "Adam learning rate of the head while the backbone is frozen.")
flags.DEFINE_integer("finetune_epochs", 60, "Fine-tuning epochs with everything trainable (8 steps each with 500 images and batch 64).")
flags.DEFINE_integer("scratch_epochs", None, "Epochs of the from-scratch baseline (default: head_epochs + finetune_epochs).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (pretraining, head while fine-tuning, scratch).")
flags.DEFINE_float("backbone_learning_rate", 1e-3, "Adam learning rate of the restored backbone while fine-tuning.")
flags.DEFINE_integer("batch_size", 64, "Batch size of fine-tuning and scratch training.")
flags.DEFINE_string("model_kwargs", '{"filters": [16, 32]}', "CNN arguments as a JSON object.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "One fine-tune/scratch comparison per seed (sample, initial weights, order).")
flags.DEFINE_string("output_json", None, "Also write the results to this JSON file.")
flags.DEFINE_integer("verbose", 0, "1: progress bars.")
FLAGS = flags.FLAGS


def _error(what, received, fix):
    from tfcustom.errors import format_error

    print("error: " + format_error(what, received, fix), file=sys.stderr)
    return 2


def main(argv):
    if len(argv) > 1:
        return _error("unexpected arguments", argv[1:], "flags take the form --name=value")
    logging.set_verbosity(logging.INFO)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one Trainer per phase: its retracing warnings are expected
    from tfcustom.errors import TfcustomError
    from tfcustom.experiment.transfer import transfer_experiment

    try:
        model_kwargs = json.loads(FLAGS.model_kwargs)
        assert isinstance(model_kwargs, dict)
    except (ValueError, AssertionError):
        return _error("--model_kwargs must be a JSON object", FLAGS.model_kwargs, 'pass e.g. --model_kwargs=\'{"filters": [16, 32]}\'')
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        return _error("--seeds must be integers", FLAGS.seeds, "pass e.g. --seeds=0,1,2")
    for name in ("pretrain_epochs", "shots", "batch_size"):
        if getattr(FLAGS, name) < 1:
            return _error(f"--{name} must be a positive integer", getattr(FLAGS, name), f"pass e.g. --{name}=3")
    for name in ("head_epochs", "finetune_epochs"):
        if getattr(FLAGS, name) < 0:
            return _error(f"--{name} must be >= 0", getattr(FLAGS, name), f"pass e.g. --{name}=5")
    start = time.time()
    try:
        results = transfer_experiment(
            FLAGS.data_dir, shots=FLAGS.shots, model_kwargs=model_kwargs, pretrain_epochs=FLAGS.pretrain_epochs,
            head_epochs=FLAGS.head_epochs, head_learning_rate=FLAGS.head_learning_rate, finetune_epochs=FLAGS.finetune_epochs,
            scratch_epochs=FLAGS.scratch_epochs, learning_rate=FLAGS.learning_rate,
            backbone_learning_rate=FLAGS.backbone_learning_rate, batch_size=FLAGS.batch_size, seeds=seeds, verbose=FLAGS.verbose)
    except TfcustomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results["wall_time_s"] = time.time() - start
    results["flags"] = {f: getattr(FLAGS, f) for f in (
        "shots", "pretrain_epochs", "head_epochs", "head_learning_rate", "finetune_epochs", "scratch_epochs",
        "learning_rate", "backbone_learning_rate", "batch_size", "model_kwargs", "seeds")}
    print(f"pretrained on classes 0-4 ({results['pretrain_examples']} images): test accuracy {results['pretrain_accuracy']:.4f}")
    print(f"classes 5-9: {results['finetune_examples']} labelled images per seed, {results['test_examples']} test images; "
          f"restored {', '.join(results['restored_layers'])}")
    for run in results["runs"]:
        head = f"  (head only, backbone frozen: {run['head_only_accuracy']:.4f})" if run["head_only_accuracy"] is not None else ""
        print(f"  seed {run['seed']}: fine-tuned {run['finetune_accuracy']:.4f}  from scratch {run['scratch_accuracy']:.4f}{head}")
    print(f"  mean:   fine-tuned {results['finetune_accuracy']:.4f}  from scratch {results['scratch_accuracy']:.4f}"
          f"  ({results['wall_time_s']:.0f} s)")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main, flags_parser=parse_flags)
