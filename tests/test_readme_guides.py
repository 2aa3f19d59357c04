"""Every docs page not run by tests/test_readme.py or tests/test_readme_strategies.py, run as
written (docs as tests; tests/readme_docs.py). A new page lands here by default."""

import pytest
from readme_docs import guides_file_pages, items_of, run_item, tiny_fashion, workspace  # noqa: F401 - the fixtures

MINE = items_of(guides_file_pages())


@pytest.mark.parametrize("item", MINE, ids=[it.id for it in MINE])
def test_readme_item(item, workspace, tiny_fashion):
    run_item(item, workspace, tiny_fashion)
