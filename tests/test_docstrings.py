"""The API reference's docstrings: their examples run, and the sections a reader looks for are there.

The public objects are those the reference renders: every class and function exported by a
module named on a ``docs/api/*.md`` page (``::: tfcustom.x``; its ``__all__``, else the objects
it defines itself),
and the objects named there directly (``::: tfcustom.Trainer``). Each object's docstring (and
its methods') ``>>>`` examples run with doctest in the namespace of the module that defines the
object, as ``doctest.testmod`` runs them. Each object should have a summary line, ``Args:`` (when it takes arguments), ``Returns:``
(a function that returns something) and an ``Examples:`` section with ``>>>`` lines;
``KNOWN_GAPS`` lists the objects still missing some (a ratchet: a new object must have them
all, and a gap that is filled must leave the list).
"""

import doctest
import importlib
import inspect
import os
import re
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(ROOT, "docs", "api")

# name -> the sections it lacks ("summary", "Args", "Returns", "Examples"). Empty since #22 item 5: every public
# object has them all; never grow it.
KNOWN_GAPS = {}


def _page_targets():
    names = []
    for page in sorted(os.listdir(API)):
        names += re.findall(r"^::: (\S+)\s*$", open(os.path.join(API, page)).read(), re.M)
    return names


def public_objects():
    """{qualified name as documented: object}, each object once (under the first name it is documented by)."""
    import tfcustom

    found, seen = {}, set()
    for target in _page_targets():
        try:
            module = importlib.import_module(target)
        except ImportError:
            module = None
        if module is None:
            objects = {target: eval(target, {"tfcustom": tfcustom})}  # e.g. tfcustom.Trainer
        else:
            names = getattr(module, "__all__", None)
            if names is None:  # as mkdocstrings: without __all__, the module's own objects, not its imports
                names = [n for n, o in vars(module).items() if not n.startswith("_") and getattr(o, "__module__", None) == target]
            objects = {f"{target}.{n}": getattr(module, n) for n in names}
        for name, obj in objects.items():
            if isinstance(obj, types.ModuleType) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("tfcustom") or id(obj) in seen:
                continue
            seen.add(id(obj))
            found[name] = obj
    return found


def _parameters(obj):
    target = obj.__init__ if inspect.isclass(obj) and "__init__" in vars(obj) else obj
    if inspect.isclass(target):
        return []
    try:
        return [p for p in inspect.signature(target).parameters if p not in ("self", "cls", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def gaps(obj):
    """The sections ``obj``'s docstring lacks."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and "__init__" in vars(obj):
        doc += "\n" + (inspect.getdoc(obj.__init__) or "")
    missing = []
    if not doc.strip():
        missing.append("summary")
    if _parameters(obj) and not re.search(r"^(Args|Arguments|Attributes|Parameters):", doc, re.M):
        missing.append("Args")
    if inspect.isfunction(obj):
        returns = inspect.signature(obj).return_annotation
        if returns not in (None, "None") and not re.search(r"^(Returns|Yields):", doc, re.M):
            missing.append("Returns")
    if not (re.search(r"^Examples?:", doc, re.M) and ">>>" in doc):
        missing.append("Examples")
    return missing


def test_every_public_object_has_summary_args_returns_and_examples():
    found = {name: gaps(obj) for name, obj in public_objects().items()}
    new = {name: g for name, g in found.items() if set(g) - set(KNOWN_GAPS.get(name, ()))}
    assert not new, f"public objects missing docstring sections (add them; see tests/test_docstrings.py): {new}"
    filled = {name: g for name, g in KNOWN_GAPS.items() if name in found and set(g) - set(found[name])}
    assert not filled, f"gaps filled: remove them from KNOWN_GAPS: {filled}"


def _examples():
    finder = doctest.DocTestFinder(recurse=True, exclude_empty=True)
    tests = []
    for name, obj in public_objects().items():
        module = inspect.getmodule(obj)
        for test in finder.find(obj, name, module=module, globs=dict(vars(module))):
            if test.examples:
                tests.append(test)
    return tests


def test_the_examples_run():
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    tests = _examples()
    assert len(tests) > 20, [t.name for t in tests]
    for test in tests:
        result = runner.run(test, out=failures.append, clear_globs=True)
        del result
    assert runner.failures == 0, "".join(failures)[-6000:]
