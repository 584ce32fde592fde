"""core/ as packages by concept: imports point one way, and nothing grows past its size."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

CORE = REPO_ROOT / "core"
# Lowest first: a package may import from its own level and the ones before it, never later.
# The top-level modules (config, errors, files, progress...) are the ground floor.
LAYERS = ("runs", "data", "features", "audit", "training", "results", "export", "jobs",
          "commands")
PACKAGES = set(LAYERS)
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 80  # code lines: the docstring is not counted
MAX_TOP_MODULES = 10  # besides __init__ and __main__


def _level(module: str) -> int:
    """Layer of a dotted module name inside core (-1: the top-level modules)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in PACKAGES else -1


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every core import in the file, lazy ones inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "core" \
                else [node.module]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("core.")]
    return found


def _upward_imports(root: Path) -> list[str]:
    wrong = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent)
        parts = relative.with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # the command line sits above everything
        own = ".".join(parts)
        for line, module in _imports(path):
            if _level(module) > _level(own):
                wrong.append(f"{relative}:{line} imports {module}")
    return wrong


def test_imports_never_point_from_a_lower_package_up_to_a_higher_one() -> None:
    assert _upward_imports(CORE) == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "core" / "data").mkdir(parents=True)
    (tmp_path / "core" / "data" / "x.py").write_text(
        "def f():\n    from core.training import pipeline\n")
    (tmp_path / "core" / "config.py").write_text("from core import jobs\n")
    assert _upward_imports(tmp_path / "core") == [
        "core/config.py:1 imports core.jobs", "core/data/x.py:2 imports core.training"]


def test_core_lists_its_packages_and_few_modules() -> None:
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == PACKAGES
    modules = [p.name for p in CORE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(modules) <= MAX_TOP_MODULES, modules


def test_no_module_grows_past_its_size() -> None:
    long = {str(p.relative_to(REPO_ROOT)): n for p in CORE.rglob("*.py")
            if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES}
    assert long == {}, "split these by concept"


def _function_lengths(path: Path) -> dict[str, int]:
    """Code lines of each function in the file (its docstring left out)."""
    lengths = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0]
            has_doc = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                       and isinstance(first.value.value, str))
            start = node.body[1 if has_doc and len(node.body) > 1 else 0].lineno
            lengths[f"{node.name}:{node.lineno}"] = node.end_lineno - start + 1
    return lengths


def test_no_function_grows_past_its_size() -> None:
    long = {f"{p.relative_to(REPO_ROOT)}:{name}": n for p in CORE.rglob("*.py")
            for name, n in _function_lengths(p).items() if n > MAX_FUNCTION_LINES}
    assert long == {}, "split these into named steps"


def test_the_function_check_counts_code_not_the_docstring(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    doc = '    """' + "\n" * 30 + '    """\n'
    (tmp_path / "f.py").write_text(f"def long():\n{body}\n\ndef short():\n{doc}    return 1\n")
    assert _function_lengths(tmp_path / "f.py") == {"long:1": 81, "short:84": 1}
