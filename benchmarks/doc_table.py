"""A benchmark's generated Markdown between two markers of a page (``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``).

    >>> replace_between("docs/guides/performance.md", "time_to_accuracy", table_text)  # doctest: +SKIP
"""

from __future__ import annotations


def markers(name: str):
    """The ``(begin, end)`` HTML comments that enclose benchmark ``name``'s generated text."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_between(path: str, name: str, text: str) -> None:
    """Replace what lies between ``name``'s markers in ``path`` with ``text``; one clear error if a marker is missing."""
    begin, end = markers(name)
    with open(path) as f:
        page = f.read()
    if begin not in page or end not in page:
        raise SystemExit(f"error: {path} has no {begin} ... {end} markers; add them where the table goes")
    start, stop = page.index(begin) + len(begin), page.index(end)
    with open(path, "w") as f:
        f.write(page[:start] + "\n" + text + "\n" + page[stop:])
