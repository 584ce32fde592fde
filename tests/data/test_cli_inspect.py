"""`python -m core inspect`: JSON contract, exit codes, readable summary, --home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_class_folders, patterned_image, zip_folder

from core.__main__ import build_parser, main


def run_cli(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if env_home is not None:
        env["TL_STUDIO_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=env, timeout=120, check=False)


@pytest.fixture
def messy_dataset(tmp_path: Path) -> Path:
    """Two usable classes plus one rejected file, a duplicate, a loose image, a .DS_Store."""
    root = make_class_folders(tmp_path / "messy", {"cats": 4, "dogs": 4})
    (root / "cats" / "broken.jpg").write_bytes(b"")
    (root / "dogs" / "copy.png").write_bytes((root / "dogs" / "img_0000.png").read_bytes())
    patterned_image(3, 3).save(root / "loose.png")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_json_report_of_a_usable_dataset(messy_dataset, studio_home):
    result = run_cli("inspect", str(messy_dataset), "--json", env_home=studio_home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert report["classes"] == {"cats": 4, "dogs": 4}
    assert report["rejected"] == [
        {"file": "cats/broken.jpg", "reason": "empty file (0 bytes); re-export or remove it"}]
    assert report["duplicates"] == [{"files": ["dogs/copy.png", "dogs/img_0000.png"],
                                     "cross_class": False, "kept": ["dogs/copy.png"]}]
    assert report["ignored"] == 1 and report["unassigned"] == ["loose.png"]
    assert isinstance(report["warnings"], list) and report["errors"] == []
    assert report["usable"] is True


def test_unusable_dataset_exits_2_with_errors(tmp_path, capsys, studio_home):
    root = make_class_folders(tmp_path / "one", {"only": 3})
    code = main(["inspect", str(root), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 2 and report["errors"] and "more class folder" in report["errors"][0]


def test_unusable_source_exits_2_with_one_line_message(tmp_path, studio_home):
    result = run_cli("inspect", str(tmp_path / "missing"), "--json", env_home=studio_home)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "does not exist" in lines[0]
    assert "Traceback" not in result.stderr


def test_not_a_zip_exits_2(tmp_path, capsys, studio_home):
    bogus = tmp_path / "photos.zip"
    bogus.write_text("hello")
    assert main(["inspect", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zip" in err


def test_readable_summary_without_json(messy_dataset, capsys, studio_home):
    assert main(["inspect", str(messy_dataset)]) == 0
    out = capsys.readouterr().out
    assert "2 classes, 8 usable images" in out
    assert "cats" in out and "cats/broken.jpg: empty file" in out
    assert "loose.png" in out and "usable" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


@pytest.mark.parametrize("position", ["before", "after"])
def test_home_option_decides_where_zips_are_extracted(small_dataset, tmp_path, capsys,
                                                      studio_home, position):
    archive = zip_folder(small_dataset, tmp_path / "small.zip")
    other_home = tmp_path / "other-home"
    args = ["inspect", str(archive), "--json"]
    argv = ["--home", str(other_home), *args] if position == "before" else \
        [*args, "--home", str(other_home)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert Path(report["root"]).is_relative_to(other_home.resolve() / "uploads")
    assert not (studio_home / "uploads").exists()


def test_parser_has_room_for_more_commands():
    parser = build_parser()
    args = parser.parse_args(["inspect", "x", "--json"])
    assert args.command == "inspect" and args.json and args.home is None
    with pytest.raises(SystemExit):
        parser.parse_args([])  # a sub-command is required
