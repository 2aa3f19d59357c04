"""The README and every page under docs/, run as written (docs as tests): the helpers and
fixtures of tests/test_readme*.py (not a test module).

The pages are shared out between three test files, so that ``--dist loadfile`` runs them on
both workers: tests/test_readme.py runs README.md and the pages that read the run it trains
(``runs/fashion_mnist_cnn``), tests/test_readme_strategies.py the pages listed in its
``PAGES``, tests/test_readme_guides.py every other page (a new page lands there by default).
Within one file the items run in document order in one temporary working directory.

Every fenced ```python block and every ``tfcustom-train ...``, ``python examples/...``
and ``bash examples/...`` command in a fenced shell block (```bash / ```sh /
```shell) of README.md is run, in README order, in one temporary working
directory that holds links to ``configs/``, ``examples/`` and ``benchmarks/``
(so ``runs/...`` paths land in the temporary directory, never in the repo).

How a README block is run, and how to mark it:

* A python block runs in a fresh interpreter, exactly as written (keep it tiny:
  a data subset, an epoch or two). A block whose first line is
  ``# continues the block above`` runs together with the block(s) before it
  (say so in the README text too). A block that is only an excerpt belongs in
  a ```text fence.
* A command is **shortened** by this test (the documented switch): training
  commands (``tfcustom-train``, ``python examples/train.py``, ``examples/sweep.py``, ``bash
  examples/main.sh``) get ``SHORTEN_TRAIN`` appended (``--epochs=1
  --train_subset=320 --validation_size=64 --test_subset=64``; flags after a
  flagfile override it); training from ``--dataset=tfrecord:DIR`` gets ``--epochs=1
  --validation_size=64``, and ``python -m tfcustom.data.convert`` converts a
  400/100-image Fashion-MNIST (``--data_dir`` appended). Set
  ``TFCUSTOM_README_FULL=1`` to run them unshortened.
  ``examples/main.sh`` runs with ``TFCUSTOM_SKIP_INSTALL=1`` (no pip install).
* A comment line ``# expect: exit N: TEXT`` right before a command (or
  anywhere in a python block) says the command fails on a machine without a
  GPU/TPU (or on purpose): the test checks the exit code N and that the last
  ``error:`` line (python: the last stderr line) contains TEXT.
* A comment line ``# readme-test: skip (REASON)`` right before a command (or
  anywhere in a python block) skips it. Keep these rare: today only the
  two-host multi-worker commands (tests/test_distributed_training.py runs
  them on 127.0.0.1) and the rerun of a stopped run (tests/test_resume.py).
* ``export NAME=value`` lines set the environment of the block's later commands.

Every command's stderr must be free of TensorFlow C++ / absl-internal lines
(the quiet-logs promise of the README).
"""

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMAND_PREFIXES = ("tfcustom-train", "python examples/", "bash examples/", "python -m tfcustom")
TRAINING = ("tfcustom-train", "python examples/train.py", "bash examples/main.sh", "python examples/sweep.py")  # take the trainer flags
SHORTEN_TRAIN = ["--epochs=1", "--train_subset=320", "--validation_size=64", "--test_subset=64"]
SHORTEN_STREAMED = ["--epochs=1", "--validation_size=64"]  # --dataset=tfrecord:DIR (its shards are small already, below)
CONVERT = "python -m tfcustom.data.convert"  # gets --data_dir=<a 400/100-image Fashion-MNIST>
SHELL_LANGS = ("bash", "sh", "shell")
TF_NOISE = re.compile(r"\.cc:\d+\]|^INFO:tensorflow:|^WARNING:tensorflow:|WARNING: All log messages before absl")
EXPECT = re.compile(r"#\s*expect:\s*exit\s+(\d+)\s*(?::\s*(.*))?$")
SKIP = re.compile(r"#\s*readme-test:\s*skip\b\s*(.*)$")
CONTINUES = "# continues the block above"


@dataclass
class Item:
    kind: str  # "python" or "command"
    line: int
    text: str  # python source, or the command line
    env: Dict[str, str] = field(default_factory=dict)
    expect: Optional[tuple] = None  # (exit code, text)
    skip: Optional[str] = None
    doc: str = "README.md"  # the file it comes from, relative to the repository

    @property
    def id(self):
        first = self.text.strip().splitlines()[0] if self.kind == "python" else self.text
        prefix = "" if self.doc == "README.md" else self.doc + ":"
        return f"{prefix}L{self.line}:{first[:60]}"


def _fences(text: str):
    """(language, first line number, lines) of every fenced block."""
    lang, start, body = None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*```\s*([\w+-]*)\s*$", line)
        if m and lang is None:
            lang, start, body = m.group(1) or "", i + 1, []
        elif m and lang is not None and not m.group(1):
            yield lang, start, body
            lang = None
        elif lang is not None:
            body.append(line)


def _marks(lines):
    expect = skip = None
    for line in lines:
        m = EXPECT.search(line)
        if m:
            expect = (int(m.group(1)), (m.group(2) or "").strip())
        m = SKIP.search(line)
        if m:
            skip = m.group(1).strip() or "marked in the README"
    return expect, skip


def extract(text: str) -> List[Item]:
    items: List[Item] = []
    for lang, start, lines in _fences(text):
        if lang == "python":
            source = "\n".join(lines) + "\n"
            expect, skip = _marks(lines)
            previous = next((it for it in reversed(items) if it.kind == "python"), None)
            if lines and lines[0].strip().startswith(CONTINUES) and previous is not None:
                previous.text += "\n" + source  # run together with the block above
                previous.expect, previous.skip = expect or previous.expect, skip or previous.skip
            else:
                items.append(Item("python", start, source, expect=expect, skip=skip))
        elif lang in SHELL_LANGS:
            env, pending, logical, first = {}, [], "", None
            for offset, raw in enumerate(lines):
                first = start + offset if not logical else first
                if raw.rstrip().endswith("\\"):
                    logical += raw.rstrip()[:-1] + " "
                    continue
                line, logical = (logical + raw).strip(), ""
                if line.startswith("#"):
                    pending.append(line)
                    continue
                if line.startswith("export "):
                    name, _, value = line[len("export "):].partition("=")
                    env[name.strip()] = shlex.split(value)[0] if value else ""
                elif line.startswith(COMMAND_PREFIXES):
                    words = shlex.split(line, comments=True)
                    expect, skip = _marks(pending)
                    items.append(Item("command", first, shlex.join(words), dict(env), expect, skip))
                pending = [] if line else pending
    return items


def doc_files() -> List[str]:
    """README.md, then every Markdown page of the docs site (docs/**/*.md), relative to the repository."""
    pages = sorted(os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(os.path.join(ROOT, "docs"))
                   for f in files if f.endswith(".md"))
    return ["README.md"] + pages


def _extract_all() -> List[Item]:
    items = []
    for doc in doc_files():
        for item in extract(open(os.path.join(ROOT, doc)).read()):
            item.doc = doc
            items.append(item)
    return items


ITEMS = _extract_all()


@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory, fashion_dir):
    from tfcustom.data import read_idx, write_idx

    d = tmp_path_factory.mktemp("tiny_fashion")
    for name, n in (("train", 400), ("t10k", 100)):
        for kind in ("images-idx3", "labels-idx1"):
            write_idx(str(d / f"{name}-{kind}-ubyte.gz"), read_idx(os.path.join(fashion_dir, f"{name}-{kind}-ubyte.gz"))[:n])
    return str(d)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    for name in ("configs", "examples", "benchmarks"):
        if os.path.exists(os.path.join(ROOT, name)):
            os.symlink(os.path.join(ROOT, name), d / name)
    return d


def _env(extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFCUSTOM_TF_LOGS", "TF_CONFIG")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TFCUSTOM_SKIP_INSTALL"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def _argv(command: str, tiny_data_dir: str) -> List[str]:
    words = shlex.split(command)
    if words[0] == "python":
        words[0] = sys.executable
    if os.environ.get("TFCUSTOM_README_FULL"):
        return words
    if command.startswith(TRAINING):
        words += SHORTEN_STREAMED if "--dataset=tfrecord:" in command else SHORTEN_TRAIN
    elif command.startswith(CONVERT):
        words.append(f"--data_dir={tiny_data_dir}")
    return words


# Which test file runs which pages (balanced by their measured times; see the module docstring).
README_FILE_PAGES = ("README.md", "docs/guides/export_evaluate_predict.md", "docs/guides/transfer_learning.md",
                     "docs/guides/cli.md")  # the first two read the run README's `bash examples/main.sh` trains
STRATEGIES_FILE_PAGES = ("docs/guides/strategies.md", "docs/guides/performance.md", "docs/guides/watching.md")


def guides_file_pages() -> List[str]:
    """The pages tests/test_readme_guides.py runs: every page the other two files do not."""
    return [d for d in doc_files() if d not in README_FILE_PAGES + STRATEGIES_FILE_PAGES]


def items_of(pages) -> List[Item]:
    """The items of ``pages`` (paths relative to the repository), in ``ITEMS`` order."""
    return [it for it in ITEMS if it.doc in pages]


def run_item(item, workspace, tiny_fashion):
    """Run one item in ``workspace``; assert its exit code, error line and quiet stderr."""
    if item.skip:
        pytest.skip(item.skip)
    if item.kind == "python":
        script = workspace / f"block_{item.doc.replace('/', '_').replace('.', '_')}_{item.line}.py"
        script.write_text(item.text)
        argv = [sys.executable, str(script)]
    else:
        argv = _argv(item.text, tiny_fashion)
    proc = subprocess.run(argv, cwd=workspace, env=_env(item.env), capture_output=True, text=True, timeout=600)
    where = f"{item.doc} line {item.line}: {item.text[:200]}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    if item.expect is None:
        assert proc.returncode == 0, where
    else:
        code, text = item.expect
        assert proc.returncode == code, where
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        last = ([l for l in lines if l.startswith("error:")] or lines or [""])[-1]
        assert text in last, where
    if item.kind == "command":
        noise = [l for l in proc.stderr.splitlines() if TF_NOISE.search(l)]
        assert not noise, f"TensorFlow log lines in the default output:\n" + "\n".join(noise[:5]) + "\n" + where
