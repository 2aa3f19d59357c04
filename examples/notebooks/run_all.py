"""Build the notebooks from their sources and execute them top to bottom.

Each notebook is written as a readable Python script in ``src/`` (the
"percent" format: ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown
cell whose lines are ``# ``-comments, ``# %% tags=["parameters"]`` the
papermill-style parameter cell, ``# %% setup`` the shared first cell from
``src/setup_cell.py``). This script turns each into an ``.ipynb``, runs it in
a fresh Jupyter kernel (nbclient) in a scratch directory and writes it, with its
outputs, next to this file:

    python examples/notebooks/run_all.py                  # all four, full parameters
    python examples/notebooks/run_all.py quickstart       # one
    python examples/notebooks/run_all.py --set EPOCHS=1   # override a parameter (papermill-style)

Parameters given with ``--set`` (and the small ones the tests use) go into an
extra cell tagged ``injected-parameters`` right after the ``parameters`` cell,
as papermill does. Every notebook ends with a cell that asserts its promised
facts and prints them as one ``NOTEBOOK_FACTS {json}`` line, which the tests read.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import tempfile
import time
from typing import Dict, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
NAMES = ("quickstart", "custom_components", "tpu_training", "from_scratch")
FACTS_PREFIX = "NOTEBOOK_FACTS "
_CELL = re.compile(r"^# %%(?P<rest>.*)$")


def _cells(text: str):
    """``[(kind, tags, source)]`` of a percent-format script."""
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is not None:
            while lines and not lines[-1].strip():
                lines.pop()
            cells.append((kind, tags, "\n".join(lines)))

    for line in text.splitlines():
        m = _CELL.match(line)
        if m:
            flush()
            rest = m.group("rest").strip()
            kind = "markdown" if rest.startswith("[markdown]") else ("setup" if rest == "setup" else "code")
            t = re.search(r"tags=(\[.*\])", rest)
            tags, lines = (ast.literal_eval(t.group(1)) if t else []), []
        elif kind is not None:
            if kind == "markdown":
                line = line[2:] if line.startswith("# ") else line.lstrip("#")
            if lines or line.strip():
                lines.append(line)
    flush()
    return cells


def build(name: str):
    """The notebook ``name`` (no outputs) from ``src/<name>.py``."""
    import nbformat

    with open(os.path.join(SRC, name + ".py")) as f:
        cells = _cells(f.read())
    with open(os.path.join(SRC, "setup_cell.py")) as f:
        setup = f.read().strip()
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "name": name + ".ipynb"},
    }
    for kind, tags, source in cells:
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(setup if kind == "setup" else source)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:12]}-{i:02d}"  # stable ids: rebuilding gives the same file
    return nb


def parameters(nb) -> Dict[str, object]:
    """The default values of the ``parameters`` cell."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def inject(nb, params: Dict[str, object]):
    """Add the papermill-style ``injected-parameters`` cell after the ``parameters`` cell."""
    import nbformat

    if not params:
        return nb
    known = parameters(nb)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SystemExit(f"error: unknown parameter(s) {unknown} (received: {params}). Use one of: {sorted(known)}")
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(index + 1, cell)
    return nb


def _render_terminal(text: str) -> str:
    """What a terminal would show for ``text`` (progress bars redraw with \\r and \\b)."""
    out, line = [], []
    for ch in text:
        if ch == "\n":
            out.append("".join(line))
            line = []
        elif ch == "\r":
            line = []
        elif ch == "\b":
            if line:
                line.pop()
        else:
            line.append(ch)
    if line:
        out.append("".join(line))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] .*)$"
)


def clean_outputs(nb):
    """Merge consecutive stream outputs and render their progress-bar redraws as a
    terminal shows them; drop TensorFlow's C++ start-up log lines (printed before
    its logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says) and timing metadata."""
    import nbformat

    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.outputs:
            previous = merged[-1] if merged else None
            if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                    and previous.name == output.name):
                previous.text += output.text
            else:
                merged.append(output)
        outputs = []
        for output in merged:
            if output.output_type == "stream":
                text = _render_terminal(output.text)
                if output.name == "stderr":
                    text = "".join(l for l in text.splitlines(True) if not _STARTUP_NOISE.match(l.rstrip("\n")))
                if not text:
                    continue
                output = nbformat.v4.new_output("stream", name=output.name, text=text)
            outputs.append(output)
        cell.outputs = outputs
    return nb


def execute(nb, workdir: str, timeout: int = 1800):
    """Run ``nb`` top to bottom in a fresh kernel started in ``workdir``; a failing cell raises."""
    from nbclient import NotebookClient

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the kernel inherits it: no C++ start-up log lines
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": workdir}})
    client.execute()
    return clean_outputs(nb)


def facts(nb) -> dict:
    """The ``NOTEBOOK_FACTS`` the final cell printed."""
    for cell in reversed(nb.cells):
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(FACTS_PREFIX):
                    return json.loads(line[len(FACTS_PREFIX):])
    raise AssertionError("the notebook printed no NOTEBOOK_FACTS line")


def run(name: str, params: Optional[Dict[str, object]] = None, workdir: Optional[str] = None):
    """Build, inject ``params``, execute; return the executed notebook."""
    nb = inject(build(name), params or {})
    with tempfile.TemporaryDirectory(prefix=f"nb_{name}_") as tmp:
        return execute(nb, workdir or tmp)


def _parse_set(items):
    params = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def main(argv=None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"notebooks to run (default: all of {', '.join(NAMES)})")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a parameter")
    parser.add_argument("--output_dir", default=HERE, help="where the executed .ipynb files go")
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    bad = [n for n in names if n not in NAMES]
    if bad:
        parser.error(f"unknown notebook(s) {bad}; choose from {', '.join(NAMES)}")
    params = _parse_set(args.set)
    for name in names:
        start = time.time()
        nb = run(name, {k: v for k, v in params.items() if k in parameters(build(name))})
        path = os.path.join(args.output_dir, name + ".ipynb")
        nbformat.write(nb, path)
        print(f"{name}: {time.time() - start:.0f} s -> {path}; facts: {json.dumps(facts(nb))[:300]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
