"""Structural rules of the codebase that review alone would let slip."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"


def _functions(folder: Path) -> list[tuple[str, int]]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                found.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", length))
    return found


def test_no_runtime_function_over_60_lines() -> None:
    """The worker loop orchestrates: no function in service/runtime is longer than 60 lines."""
    long = [(name, n) for name, n in _functions(SERVICE / "runtime") if n > 60]
    assert long == []


def test_confluent_kafka_only_in_the_kafka_package() -> None:
    """Third-party Kafka types never leak past the edge: only service/kafka imports them."""
    out = subprocess.run(
        ["grep", "-rln", "confluent_kafka", str(SERVICE)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    outside = [p for p in out if not Path(p).is_relative_to(SERVICE / "kafka")]
    assert outside == []


def test_worker_never_branches_on_the_guarantee() -> None:
    """The delivery mode is a Guarantee object: the worker does not compare the mode."""
    text = (SERVICE / "runtime" / "worker.py").read_text()
    assert "exactly_once" not in text
    assert "at_least_once" not in text
    assert "_eos" not in text


def test_processing_imports_no_client_library() -> None:
    """The pure middle imports neither redis nor confluent_kafka."""
    for path in (SERVICE / "processing").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("redis", "confluent_kafka")], path


def test_every_exception_class_lives_in_errors() -> None:
    """One exception hierarchy: every class rill raises on purpose is in service/errors.py."""
    elsewhere = []
    for path in sorted(SERVICE.rglob("*.py")):
        if path == SERVICE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception"))
                for b in node.bases
            ):
                elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert elsewhere == []


def _unit(module: str) -> str | None:
    """The package or top-level module of `service/` that a dotted module name is in."""
    parts = module.split(".")
    if parts[0] != "service":
        return None
    if len(parts) == 1:
        return "service"  # service/__init__.py
    return parts[1]


def _imported(path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names one import statement of `path` reaches (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    module = node.module or ""
    if node.level:
        module = f"{base}.{module}" if module else base
    # `from service import x` imports the submodule x when there is one.
    return [module] + [f"{module}.{alias.name}" for alias in node.names if module == "service"]


def import_graph() -> dict[str, set[str]]:
    """Which unit of `service/` imports which (a package or a top-level module each).

    Every import counts, also those under TYPE_CHECKING and inside functions: a cycle
    of types is a cycle a reader has to untangle all the same.
    """
    units = {p.stem if p.is_file() else p.name for p in SERVICE.iterdir() if p.suffix == ".py"}
    units |= {p.name for p in SERVICE.iterdir() if (p / "__init__.py").exists()}
    graph: dict[str, set[str]] = {}
    for path in sorted(SERVICE.rglob("*.py")):
        parts = path.relative_to(SERVICE).parts
        source = "service" if parts == ("__init__.py",) else parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(path, node):
                target = _unit(name)
                if target is None or target == source:
                    continue
                if target not in units and target != "service":
                    target = "service"  # a name from service/__init__.py
                graph.setdefault(source, set()).add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for nxt in sorted(graph.get(unit, ())):
            if nxt not in index:
                visit(nxt)
                low[unit] = min(low[unit], low[nxt])
            elif nxt in stack:
                low[unit] = min(low[unit], index[nxt])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return sorted(found)


def test_cycles_finds_a_cycle() -> None:
    """The cycle finder sees a cycle through three units and none in a chain."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_cycle_among_service_packages() -> None:
    """The packages and top-level modules of service/ import each other as a DAG."""
    graph = import_graph()
    assert graph["processing"]  # the walk found imports at all
    assert graph["state"]
    assert cycles(graph) == []


def test_processing_never_imports_state() -> None:
    """The pure middle hands the state edge plain values; it never imports it."""
    assert "state" not in import_graph()["processing"]


def test_value_modules_import_only_values() -> None:
    """records.py and window_state.py sit below every layer: they import no other layer."""
    graph = import_graph()
    assert graph["records"] <= {"errors"}
    assert graph["window_state"] <= {"records"}


def test_the_shipped_package_imports_no_dev_dependency() -> None:
    """Twins and their fakes live in tests/support: service/ never imports fakeredis."""
    for path in SERVICE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names.append(getattr(node, "module", None) or "")
                assert not [n for n in names if n.split(".")[0] in ("fakeredis", "tests")], path


def test_the_readme_is_short_and_every_doc_link_resolves() -> None:
    """The README stays a user's page (< 250 lines); its and docs/' relative links exist."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 250
    broken = []
    for page in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif _ignored_by_git(page.parent / target):
                broken.append(f"{page.relative_to(ROOT)}: {target} (ignored by git)")
    assert broken == []


def _ignored_by_git(path: Path) -> bool:
    """A link to a file .gitignore hides resolves here and is broken in a fresh clone."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return False
    done = subprocess.run(["git", "check-ignore", "-q", str(path.resolve())], cwd=ROOT, check=False)
    return done.returncode == 0
