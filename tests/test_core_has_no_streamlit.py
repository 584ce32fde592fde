"""core/ must never import streamlit (checked by parsing every file, not by grep)."""

from __future__ import annotations

import ast

from conftest import REPO_ROOT

CORE = REPO_ROOT / "core"
IMPORT_FUNCTIONS = {"__import__", "import_module"}


def streamlit_imports(source: str, filename: str = "<string>") -> list[int]:
    """Line numbers where the module imports streamlit, directly or dynamically."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if called in IMPORT_FUNCTIONS and node.args and \
                    isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_file_under_core_imports_streamlit():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 4  # the check really looks at core/
    offenders = {
        str(path.relative_to(REPO_ROOT)): found
        for path in files
        if (found := streamlit_imports(path.read_text(encoding="utf-8"), str(path)))
    }
    assert offenders == {}, f"core/ must not import streamlit: {offenders}"


def test_the_check_catches_every_form_of_import():
    assert streamlit_imports("import streamlit as st") == [1]
    assert streamlit_imports("import os, streamlit.components.v1") == [1]
    assert streamlit_imports("from streamlit import session_state") == [1]
    assert streamlit_imports("def f():\n    from streamlit.runtime import x") == [2]
    assert streamlit_imports("import importlib\nimportlib.import_module('streamlit')") == [2]
    assert streamlit_imports("__import__('streamlit')") == [1]
    assert streamlit_imports("import streamlit_extras\nfrom . import streamlit") == []
    assert streamlit_imports("x = 'import streamlit'  # import streamlit") == []
