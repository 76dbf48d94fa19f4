"""`rill plan` as a command: flags, inputs, printed output and the PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from service.planner.cli import main, parser


def test_every_flag_is_documented() -> None:
    """`rill plan --help` has a help text for every flag."""
    undocumented = [a.option_strings for a in parser()._actions if not a.help]
    assert undocumented == []


def test_prints_table_and_summary_for_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    """A step-up profile prints both autoscalers side by side and their summary figures."""
    assert main(["--per-replica-rps", "1000", "--duration", "300", "--every", "60"]) == 0
    out = capsys.readouterr().out
    assert "hpa des" in out
    assert "keda des" in out
    assert "replica-minutes" in out
    assert "time over 60 s lag (s)" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r.split()[0]) for r in rows[:6]] == [0, 60, 120, 180, 240, 300]


def test_throughput_from_a_bench_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--bench-file reads the named records/s figure of a `make bench` result."""
    bench = tmp_path / "throughput-1.json"
    bench.write_text(json.dumps({"rill_windowed_records_per_s": 1234, "records": 10}))
    assert main(["--bench-file", str(bench), "--duration", "60"]) == 0
    assert "1234 records/s" in capsys.readouterr().out


def test_missing_throughput_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No flag and no bench result: exit 2 telling how to get the figure."""
    monkeypatch.chdir(tmp_path)
    assert main(["--duration", "60"]) == 2
    assert "--per-replica-rps" in capsys.readouterr().err


def test_csv_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--csv drives the run from a t_s,records_per_s file."""
    csv = tmp_path / "p.csv"
    csv.write_text("t_s,records_per_s\n0,100\n120,4000\n240,100\n")
    assert main(["--csv", str(csv), "--per-replica-rps", "1000", "--every", "120"]) == 0
    assert "4000" in capsys.readouterr().out


def test_png_is_written(tmp_path: Path) -> None:
    """--png writes a PNG image."""
    png = tmp_path / "plan.png"
    assert main(["--per-replica-rps", "1000", "--duration", "120", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without matplotlib, --png fails with the extra to install."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ["--per-replica-rps", "1000", "--duration", "60", "--png", str(tmp_path / "x.png")]
    assert main(args) == 2
    assert "rill[plan]" in capsys.readouterr().err


def test_invalid_bounds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """min above max is refused before simulating."""
    assert main(["--per-replica-rps", "1", "--min-replicas", "5", "--max-replicas", "2"]) == 2
    assert "--min-replicas" in capsys.readouterr().err
