"""README.md and the pages that use the run it trains, run as written (docs as tests).

How the items are found, run and marked: tests/readme_docs.py. The other pages run in
tests/test_readme_strategies.py and tests/test_readme_guides.py (split for ``--dist loadfile``).
"""

import os

import pytest
from readme_docs import (ITEMS, README_FILE_PAGES, ROOT, STRATEGIES_FILE_PAGES, doc_files, guides_file_pages,
                         items_of, run_item, tiny_fashion, workspace)  # noqa: F401 - the fixtures

MINE = items_of(README_FILE_PAGES)


def test_readme_has_blocks_and_commands():
    kinds = {it.kind for it in ITEMS}
    assert kinds == {"python", "command"}, ITEMS


def test_every_page_is_run_by_exactly_one_file():
    for page in README_FILE_PAGES + STRATEGIES_FILE_PAGES:
        assert os.path.isfile(os.path.join(ROOT, page)), page
    shares = [list(README_FILE_PAGES), list(STRATEGIES_FILE_PAGES), guides_file_pages()]
    assert sorted(p for share in shares for p in share) == sorted(doc_files())


@pytest.mark.parametrize("item", MINE, ids=[it.id for it in MINE])
def test_readme_item(item, workspace, tiny_fashion):
    run_item(item, workspace, tiny_fashion)
