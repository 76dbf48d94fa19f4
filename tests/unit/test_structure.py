"""Structural rules of the codebase that review alone would let slip."""

from __future__ import annotations

import ast
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
