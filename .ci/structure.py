"""The shape of the code, measured: long functions and modules, root modules, import cycles, private imports.

    python .ci/structure.py            # the numbers, and the offenders
    python .ci/structure.py --check    # exit 1 if any number is worse than LIMITS (tests/test_structure.py runs this)

LIMITS are the targets of the "open loop" redesign where they are met, and today's values where they
are not yet (a ratchet: lower them as the code improves, never raise them).
"""

import argparse
import ast
import json
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tfcustom")

# target -> the value allowed today (ratchet). Targets: functions <= 60 lines (docstring aside), modules <= 400 lines,
# <= 12 modules at tfcustom/'s root, no import cycle, no cross-module import of a _private name.
LIMITS = {
    "functions_over_60_lines": 0,
    "longest_function_lines": 60,
    "modules_over_400_lines": 0,
    "root_modules": 12,
    "import_cycles": 0,
    "private_cross_imports": 0,
    "function_local_imports": 25,
    "train_step_lines": 50,  # the per-replica step inside tfcustom.training.steps.make_train_step: on one screen
    "upward_imports": 0,  # an import of a higher layer (LAYERS), at module level or inside a function
}

# The house by layers, bottom first: a package imports its own layer or the ones below, never above.
LAYERS = [
    {"errors", "disk_errors", "run_json", "testing"},
    {"layers", "losses", "metrics"}, {"models"}, {"optimizers"},
    {"data"}, {"distribute"}, {"callbacks"}, {"training"}, {"doctor"}, {"experiment"}, {"cli"},
]


def _modules():
    for d, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield (name[: -len(".__init__")] if name.endswith(".__init__") else name), path


def _function_lines(node) -> int:
    """Lines from ``def`` to the end, the docstring's lines not counted."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def measure():
    functions, sizes, graph, private, local_imports = [], {}, defaultdict(set), [], []
    modules = dict(_modules())
    for name, path in modules.items():
        source = open(path).read()
        tree = ast.parse(source)
        sizes[name] = len(source.splitlines())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((_function_lines(node), f"{name}.{node.name}"))
            if isinstance(node, ast.ImportFrom) and node.col_offset == 0:  # module-level imports make the graph
                target = _resolve(name, node, path.endswith("__init__.py"))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[name].add(full if full in modules else target)
                    if _is_private_import(name, target, alias.name):
                        private.append(f"{name} imports {target}.{alias.name}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfcustom"):
                local_imports.append(f"{name} (line {node.lineno}) imports {node.module}")
    upward = _upward_imports(modules)
    cycles = _cycles({k: {t for t in v if t in modules and t != k} for k, v in graph.items()})
    root = [n for n in modules if n.count(".") == 1 and os.path.basename(modules[n]) != "__init__.py"]
    long_functions = sorted((f for f in functions if f[0] > 60), reverse=True)
    return {
        "functions_over_60_lines": len(long_functions),
        "longest_function_lines": max(f[0] for f in functions),
        "modules_over_400_lines": sum(1 for n in sizes.values() if n > 400),
        "root_modules": len(root),
        "import_cycles": len(cycles),
        "private_cross_imports": len(private),
        "function_local_imports": len(local_imports),
        "train_step_lines": max([n for n, f in functions if f == "tfcustom.training.steps.train_step"] or [10**6]),
        "upward_imports": len(upward),
    }, {"upward imports": upward, "long functions": [f"{n} lines: {f}" for n, f in long_functions],
        "long modules": [f"{n}: {s} lines" for n, s in sizes.items() if s > 400],
        "cycles": [" -> ".join(c) for c in cycles], "private imports": private,
        "function-local imports": local_imports}


def _layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return next((i for i, names in enumerate(LAYERS) if part in names), -1)  # -1: tfcustom/__init__.py, above all


def _upward_imports(modules) -> list:
    """``module imports target`` for every import (anywhere in the module) of a package in a higher layer."""
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(open(path).read())):
            targets = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if isinstance(node, ast.ImportFrom) and node.module == "tfcustom":
                targets = [f"tfcustom.{a.name}" for a in node.names]
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t.startswith("tfcustom.") and _layer(name) >= 0 and _layer(t) > _layer(name):
                    found.append(f"{name} (line {node.lineno}) imports {t}")
    return found


def _is_private_import(module: str, target: str, name: str) -> bool:
    """A ``_name`` imported from another module, unless that module is its package's own private helper
    (``tfcustom/metrics/_utils.py`` for ``tfcustom.metrics.*``)."""
    if not target.startswith("tfcustom") or not name.startswith("_") or name.startswith("__"):
        return False
    package, leaf = target.rsplit(".", 1)
    return not (leaf.startswith("_") and module.startswith(package + "."))


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a number is worse than LIMITS")
    args = parser.parse_args()
    numbers, details = measure()
    print(json.dumps(numbers, indent=1))
    for title, lines in details.items():
        if lines:
            print(f"{title}:\n  " + "\n  ".join(lines))
    worse = {k: (v, LIMITS[k]) for k, v in numbers.items() if v > LIMITS[k]}
    if args.check and worse:
        print("error: worse than .ci/structure.py LIMITS: " + ", ".join(f"{k} {v} > {lim}" for k, (v, lim) in worse.items())
              + "; shorten the code (or, if a limit is now met with room, lower it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
