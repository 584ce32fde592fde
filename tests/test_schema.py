"""core.schema: the validators every state file is read through."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core import schema as s

SPEC = s.document({
    "share": s.SHARE, "count": s.COUNT, "name": s.text(), "kind": s.text("a", "b"),
    "flag": s.boolean, "items": s.list_of(s.record({"x": s.number()}, required=("x",))),
    "table": s.mapping(s.COUNT),
}, required=("name",))


def test_good_documents_pass() -> None:
    good = {"share": 0.5, "count": 3, "name": "n", "kind": "a", "flag": True,
            "items": [{"x": 1.5}], "table": {"k": 2}, "extra": object()}
    assert s.check(good, SPEC, "f.json") is good
    assert s.valid({"name": "n", "share": None, "count": 3.0}, SPEC) is None


@pytest.mark.parametrize(("data", "where"), [
    ({"name": "n", "share": "abc"}, "f.json.share"),
    ({"name": "n", "share": 1.5}, "f.json.share"),
    ({"name": "n", "share": math.nan}, "f.json.share"),
    ({"name": "n", "share": True}, "f.json.share"),
    ({"name": "n", "count": -1}, "f.json.count"),
    ({"name": "n", "count": 2.5}, "f.json.count"),
    ({"name": 5}, "f.json.name"),
    ({"name": "n", "kind": "c"}, "f.json.kind"),
    ({"name": "n", "flag": "yes"}, "f.json.flag"),
    ({"name": "n", "items": [{"y": 1}]}, "f.json.items[0] lacks x"),
    ({"name": "n", "items": "x"}, "f.json.items"),
    ({"name": "n", "table": {"k": "2"}}, "f.json.table.k"),
    ({}, "f.json lacks name"),
    ([1], "f.json must be a JSON object"),
])
def test_wrong_types_and_ranges_say_where(data: object, where: str) -> None:
    with pytest.raises(s.SchemaError, match=None) as caught:
        s.check(data, SPEC, "f.json")
    assert str(caught.value).startswith(where)


def test_set_aside_keeps_the_damaged_file_beside(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.json"
    path.write_text("[]")
    moved = s.set_aside(path, "not an object")
    assert moved is not None and moved.read_text() == "[]" and not path.exists()
    assert moved.name.startswith("audit.json.damaged-") and "not an object" in caplog.text
