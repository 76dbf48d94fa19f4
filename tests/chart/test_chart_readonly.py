"""rill starts from the chart's configuration writing nothing outside /tmp.

The pod runs with a read-only root filesystem and one writable emptyDir at /tmp. Without
a container runtime here, a child Python process stands in: it gets the environment and
pipeline file the chart renders, runs `rill check-config` and compiles a .proto schema
(protoc writes a descriptor set to a temp dir), and a `sys.addaudithook` hook records
every file opened for writing, every directory made and every file removed or renamed
outside TMPDIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.chart.test_helm_chart import ROOT, container_env, rendered

PROTO = """
syntax = "proto3";
package shop;
message Order { string id = 1; string customer_id = 2; double amount = 3; int64 created_at = 4; }
"""

CHILD = textwrap.dedent(
    """
    import json, os, sys

    tmp = os.path.realpath(os.environ["TMPDIR"])
    writes = []

    def outside(path):
        if isinstance(path, int):
            return False
        real = os.path.realpath(os.fsdecode(path))
        return not (real == tmp or real.startswith(tmp + os.sep) or real.startswith("/dev/"))

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            wants = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if wants and outside(path):
                writes.append([event, os.fsdecode(path)])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.symlink"):
            if outside(args[0]):
                writes.append([event, os.fsdecode(args[0])])

    sys.addaudithook(hook)
    from service.cli import main
    from service.serde.protobuf_serde import load_message_class

    code = main(["check-config"])
    message = load_message_class(sys.argv[1], "shop.Order")
    print(json.dumps({"code": code, "message": message.DESCRIPTOR.full_name, "writes": writes}))
    """
)


def test_startup_writes_only_under_tmp(tmp_path: Path) -> None:
    """check-config and a .proto compile, configured as the chart does, write only to TMPDIR."""
    docs = rendered(profile="monitoring")
    etc = tmp_path / "etc"
    (etc / "config").mkdir(parents=True)
    (etc / "schemas").mkdir()
    schemas = docs["ConfigMap/demo-rill-schemas"]["data"]
    for name, text in schemas.items():
        (etc / "schemas" / name).write_text(text)
    (etc / "schemas" / "order.proto").write_text(PROTO)
    pipeline = yaml.safe_load(docs["ConfigMap/demo-rill-pipeline"]["data"]["pipeline.yaml"])
    pipeline["input_schema"] = str(etc / "schemas" / "payment.avsc")
    (etc / "config" / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    writable = tmp_path / "tmp"
    writable.mkdir()
    env = {k: v for k, v in container_env(docs).items() if isinstance(v, str)}
    env["RILL_CONFIG"] = str(etc / "config" / "pipeline.yaml")
    env.update(
        PATH=os.environ.get("PATH", ""),
        TMPDIR=str(writable),
        HOME=str(writable),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(etc / "schemas" / "order.proto")],
        capture_output=True,
        text=True,
        env=env,
        cwd=writable,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["message"] == "shop.Order"
    assert result["writes"] == [], "writes outside /tmp would fail on a read-only root"
