"""tfcustom: a TensorFlow 2 custom-training toolkit."""

__version__ = "0.1.0"
