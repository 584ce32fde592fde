"""Outputs go where they are told: every --out writes a regular file or folder (through a
symbolic link as Unix tools do), and refuses a device, named pipe or socket with a message;
nothing is ever renamed over a device, link or pipe."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import make_class_folders
from run_helpers import make_run, tiny_classifier

from core import files
from core.__main__ import main
from core.errors import AppError
from core.export import exporter


@pytest.fixture
def specials(tmp_path: Path) -> dict[str, Path]:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    (tmp_path / "file.png").write_bytes(b"old")
    (tmp_path / "folder").mkdir()
    links = {"link_to_null": "/dev/null", "link_to_pipe": str(pipe),
             "link_to_file": str(tmp_path / "file.png"), "dangling": str(tmp_path / "nowhere")}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    return {"pipe": pipe, **{name: tmp_path / name for name in links},
            "file": tmp_path / "file.png", "folder": tmp_path / "folder"}


@pytest.mark.parametrize("name", ["pipe", "link_to_null", "link_to_pipe", "folder", "dangling"])
def test_a_file_output_refuses_what_is_not_a_regular_file(specials: dict[str, Path],
                                                          name: str) -> None:
    with pytest.raises(files.OutputError, match="--out"):
        files.file_target(specials[name])


def test_a_file_output_writes_through_a_link_to_a_regular_file(
        specials: dict[str, Path]) -> None:
    assert files.file_target(specials["link_to_file"]) == specials["file"].resolve()
    assert files.file_target(specials["file"]) == specials["file"]
    with pytest.raises(files.OutputError, match="does not exist"):
        files.file_target(specials["folder"] / "missing" / "x.png")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_devices_are_refused() -> None:
    for device in ("/dev/full", "/dev/null"):
        with pytest.raises(files.OutputError, match="character device"):
            files.file_target(device)
        with pytest.raises(files.OutputError, match="not a folder"):
            files.folder_target(device)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("out")
    data = make_class_folders(root / "data", {"cats": 6, "dogs": 6}, size=32)
    run = make_run(root / "home", data, tiny_classifier(2), train=False)
    return root / "home", run.run_id, next((data / "cats").iterdir())


@pytest.mark.parametrize("name", ["pipe", "link_to_null", "link_to_pipe", "folder"])
def test_explain_out_refuses_and_leaves_the_target_alone(
        home: tuple[Path, str, Path], specials: dict[str, Path], name: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    studio, run_id, photo = home
    target = specials[name]
    before = os.lstat(target)
    code = main(["--home", str(studio), "explain", run_id, str(photo), "--out", str(target)])
    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_explain_out_dev_full_is_an_error(home: tuple[Path, str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    studio, run_id, photo = home
    code = main(["--home", str(studio), "explain", run_id, str(photo), "--out", "/dev/full"])
    assert code != 0
    assert "character device" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("name", ["pipe", "link_to_null", "file"])
def test_export_out_refuses_what_is_not_a_folder(home: tuple[Path, str, Path],
                                                 specials: dict[str, Path], name: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    studio, run_id, _photo = home
    code = main(["--home", str(studio), "export", run_id, "--out", str(specials[name]),
                 "--formats", "keras"])
    assert code != 0 and "not a folder" in capsys.readouterr().err


def test_export_never_renames_over_a_link_in_place_of_the_export_folder(
        home: tuple[Path, str, Path], tmp_path: Path) -> None:
    studio, run_id, _photo = home
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "out" / run_id
    link.parent.mkdir()
    link.symlink_to(tmp_path / "elsewhere")
    from core.runs.store import RunStore

    with pytest.raises(AppError, match="symbolic link"):
        exporter.export_run(RunStore(studio).load(run_id), tmp_path / "out", formats="keras")
    assert link.is_symlink() and not any((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("text", ["", " ", ",", " , "])
def test_empty_formats_are_an_error_not_all(text: str) -> None:
    with pytest.raises(AppError, match="No format given"):
        exporter.parse_formats(text)
    assert exporter.parse_formats(None) == exporter.export_formats.NAMES
