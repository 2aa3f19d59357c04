"""The code's shape stays within .ci/structure.py's LIMITS (a ratchet toward the redesign's targets)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_structure_numbers_do_not_get_worse():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, ".ci", "structure.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_measures_function_length_without_docstring(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, ".ci"))
    try:
        import ast
        import structure
    finally:
        sys.path.pop(0)
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    node = ast.parse(f'def f():\n    """Doc.\n\n    More.\n    """\n{body}\n').body[0]
    assert structure._function_lines(node) == 62  # the def line and the body; the 4 docstring lines not
    node = ast.parse(f"def g():\n{body}\n").body[0]
    assert structure._function_lines(node) == 62
