"""The project's promises about itself: README commands, CI script, page size."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", text, flags=re.S)


def test_readme_gives_one_app_command_and_one_test_command() -> None:
    commands = [c for c in _readme_commands() if "pip install" in c]
    assert any("streamlit run streamlit_app.py" in c for c in commands)
    assert any("pytest" in c for c in commands)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = next(c for c in _readme_commands() if "pytest" in c and "pip install" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command.strip() in [line.strip() for line in ci_lines]


def test_pages_stay_thin() -> None:
    pages = sorted((ROOT / "app_pages").glob("*.py"))
    assert len(pages) >= 6, pages
    for page in [ROOT / "streamlit_app.py", *pages]:
        lines = page.read_text().count("\n")
        assert lines <= 200, f"{page.name} has {lines} lines; move logic to ui/ or core/"
        assert not re.search(r"^def |^class ", page.read_text(), flags=re.M), (
            f"{page.name} defines helpers; they belong in ui/"
        )
