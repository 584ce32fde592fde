"""Names with control characters (newline, tab, ESC, bidi overrides) and names differing only
in case are refused in zips and server folders, as the dataset builder refuses them."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_helpers import img_bytes, rejected, two_classes, write_files, zip_bytes
from hostile_names import CONTROL_NAMES

from core.data import datasets, names
from core.errors import DatasetError


def _with_class(name: str) -> dict[str, bytes]:
    files = two_classes(5)
    files.update({f"{name}/{i}.png": img_bytes(3, i) for i in range(5)})
    return files


@pytest.mark.parametrize("name", [n for n in CONTROL_NAMES if "\x00" not in n])
def test_a_class_folder_with_control_characters_is_refused_with_the_reason(
        tmp_path: Path, name: str) -> None:
    dataset = datasets.ingest(write_files(tmp_path / "set", _with_class(name)))
    assert set(dataset.classes) == {"a", "b"}  # labels.txt can never get a line too many
    refused = {f: r for f, r in rejected(dataset.report).items() if f.startswith(name)}
    assert len(refused) == 5
    assert all("control or invisible characters" in r for r in refused.values())


@pytest.mark.parametrize("name", ["line1\nline2", "bidi\u202egnp", "esc\x1b[31mred"])
def test_a_zip_with_such_a_class_or_file_name_is_refused_too(tmp_path: Path, name: str) -> None:
    files = _with_class(name)
    files[f"a/{name}.png"] = img_bytes(0, 9)
    dataset = datasets.ingest(zip_bytes(files), home=tmp_path / "home")
    assert set(dataset.classes) == {"a", "b"}
    reasons = rejected(dataset.report)
    assert any(f.endswith(f"{name}.png") for f in reasons)
    assert sum("control or invisible" in r for r in reasons.values()) == 6


def test_class_folders_differing_only_in_case_are_an_error(tmp_path: Path) -> None:
    files = two_classes(5)
    files.update({f"Cat/{i}.png": img_bytes(2, i) for i in range(5)})
    files.update({f"cat/{i}.png": img_bytes(3, i) for i in range(5)})
    dataset = datasets.ingest(write_files(tmp_path / "set", files))
    assert not dataset.report.usable
    assert any("'Cat' and 'cat' differ only in case" in e for e in dataset.report.errors)


@pytest.mark.parametrize("name", CONTROL_NAMES)
def test_the_builder_refuses_the_same_names(name: str) -> None:
    assert names.has_control(name)
    with pytest.raises(DatasetError, match="control or invisible"):
        names.clean_name(name)
