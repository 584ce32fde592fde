"""The command line never prints a name's control characters raw, and a full output is one
line of error, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_class_folders

from core import text


def cli(*args: str, home: Path, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess:
    env = {**os.environ, "TL_STUDIO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "core", "--home", str(home), *args],
                          cwd=REPO_ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE,
                          check=False,
                          timeout=300)


def test_clean_and_printable_escape_what_a_terminal_would_run() -> None:
    assert text.clean("a\x1b[31mb\u202ec\n\t") == "a\\e[31mb\\u202ec\n\t"
    assert text.printable("line1\nline2\ttab\x1b") == "line1\\nline2\\ttab\\e"
    assert json.loads(text.clean(json.dumps("x\u202ey", ensure_ascii=False))) == "x\u202ey"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("runs",), ("runs", "--json"), ("datasets",)])
def test_a_full_output_is_one_line_of_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    with open("/dev/full", "w") as full:
        done = cli(*args, home=tmp_path, stdout=full)
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "Traceback" not in err and "Exception ignored" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: cannot write the output: the device or disk is full (No space left)."]


def test_inspect_prints_no_escape_sequence_or_bidi_override(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", {"cats": 5, "dogs": 5}, size=32)
    (data / "cats" / "img_0000.png").rename(data / "cats" / "evil\x1b[2J\u202egnp.png")
    (data / "dogs" / "img_0000.png").rename(data / "dogs" / "two\nlines.png")
    done = cli("inspect", str(data), home=tmp_path / "home")
    out = done.stdout.decode() + done.stderr.decode()
    assert "\x1b" not in out and "\u202e" not in out
    assert "evil\\e[2J\\u202egnp.png" in out
    assert "two\\nlines.png" in out  # one line, as typed
