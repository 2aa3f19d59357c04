"""The docs pages of STRATEGIES_FILE_PAGES, run as written (docs as tests; tests/readme_docs.py)."""

import pytest
from readme_docs import STRATEGIES_FILE_PAGES, items_of, run_item, tiny_fashion, workspace  # noqa: F401 - the fixtures

MINE = items_of(STRATEGIES_FILE_PAGES)


@pytest.mark.parametrize("item", MINE, ids=[it.id for it in MINE])
def test_readme_item(item, workspace, tiny_fashion):
    run_item(item, workspace, tiny_fashion)
