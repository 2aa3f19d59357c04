"""Per-epoch training history: in memory, as ``history.json`` / ``history.csv``, and as a plot.

Examples:
    >>> h = History()
    >>> h.append({"epoch": 1, "loss": 0.5, "val_loss": 0.6})
    >>> h.write("runs/demo")          # history.json + history.csv
    >>> h.plot("runs/demo/learning_curves.png")
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Dict, List

from tfcustom.disk_errors import atomic
from tfcustom.run_json import damaged, read_json, write_text


class History:
    """A list of per-epoch records (dicts of floats), with one column per key.

    [`Trainer.fit`][tfcustom.Trainer.fit] returns it; ``history`` is Keras'
    ``{metric: [value per epoch]}``.

    Args:
      records: the epochs so far, e.g. read back from ``history.json``.

    Examples:
        >>> h = History()
        >>> h.append({"epoch": 1, "loss": 0.5, "val_accuracy": 0.8})
        >>> h.append({"epoch": 2, "loss": 0.25, "val_accuracy": 0.9})
        >>> len(h), h["loss"]
        (2, [0.5, 0.25])
        >>> h.history["val_accuracy"]
        [0.8, 0.9]
    """

    def __init__(self, records: List[Dict[str, float]] | None = None):
        self.records: List[Dict[str, float]] = list(records or [])

    def append(self, record: Dict[str, float]) -> None:
        self.records.append({k: (float(v) if not isinstance(v, int) else v) for k, v in record.items()})

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> List[float]:
        return [r.get(key) for r in self.records]

    @property
    def history(self) -> Dict[str, List[float]]:
        """Keras-style ``{metric: [value per epoch]}``."""
        return {k: self[k] for k in self.keys()}

    def keys(self) -> List[str]:
        keys: List[str] = []
        for r in self.records:
            keys.extend(k for k in r if k not in keys)
        return keys

    def to_json(self) -> str:
        return json.dumps(self.records, indent=2)

    def write(self, directory: str) -> None:
        """Write ``history.json`` and ``history.csv`` into ``directory`` (atomically)."""
        os.makedirs(directory, exist_ok=True)
        write_text(os.path.join(directory, "history.json"), self.to_json() + "\n")
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.keys(), lineterminator="\r\n")
        writer.writeheader()
        for r in self.records:
            writer.writerow(r)
        write_text(os.path.join(directory, "history.csv"), text.getvalue())

    @classmethod
    def read(cls, directory: str) -> "History":
        """``directory/history.json``; a truncated or edited file is one [`ConfigError`][tfcustom.ConfigError]."""
        path = os.path.join(directory, "history.json")
        records = read_json(path, list)
        if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records):
            raise damaged(path, "every record must be an object with an integer epoch")
        return cls(records)

    def plot(self, path: str, metric: str = "accuracy") -> str:
        """Learning curves: train vs validation loss and ``metric`` per epoch.

        Where validation loss rises while training loss falls, the model overfits.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = self["epoch"]
        panels = [k for k in ("loss", metric) if k in self.keys()]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        for ax, key in zip(axes[0], panels):
            ax.plot(epochs, self[key], "o-", label=f"train {key}")
            if f"val_{key}" in self.keys():
                ax.plot(epochs, self[f"val_{key}"], "s-", label=f"validation {key}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("Learning curves (a widening train-validation gap = overfitting)")
        fig.tight_layout()
        with atomic(path) as tmp:  # never half a picture; a full disk is one line
            fig.savefig(tmp, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
        plt.close(fig)
        return path
