"""What a saved dataset's record (<home>/saved-datasets/<id>/saved.json) must hold (see
core.schema). A record that does not match lists the dataset as damaged, with the reason."""

from __future__ import annotations

from core.schema import TIME, document, list_of, text

SAVED = document({
    "name": text(), "created": TIME, "source": text(), "kind": text("built", "upload", "folder"),
    "root": text(), "past_roots": list_of(text()),
}, required=("name",))
