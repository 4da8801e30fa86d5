"""The real-backend fixture empties its tables with DELETEs in an order no foreign key can refuse."""

from __future__ import annotations

import pytest

from testbed.smartem_real.supervisor import children_first


def test_tables_are_emptied_children_first() -> None:
    tables = ["acquisition", "grid", "gridsquare", "foilhole", "log"]
    refs = [("grid", "acquisition"), ("gridsquare", "grid"), ("foilhole", "gridsquare"), ("foilhole", "grid"),
            ("gridsquare", "gridsquare"), ("grid", "elsewhere")]  # fmt: skip
    order = children_first(tables, refs)
    assert sorted(order) == sorted(tables)
    for child, parent in refs:
        if child != parent and parent in tables:
            assert order.index(child) < order.index(parent), (child, parent)
    with pytest.raises(ValueError, match="cycle"):
        children_first(["a", "b"], [("a", "b"), ("b", "a")])
