"""Schemathesis against a real gateway, inside a network namespace that has only loopback.

``test_fuzz.py`` starts this module under ``unshare --net``: generated requests may register
neurons at any URL, and the gateway then probes them, so nothing here can reach beyond
this namespace's ``lo``. It brings ``lo`` up, starts two simulated neurons (one scripted
as a brain) and a gateway, registers the sims, runs ``schemathesis run`` on the gateway's
``/openapi.json`` and prints one JSON line: the requests made, the 5xx answers seen (method,
path, status, body) and schemathesis's exit code.

    python -m tests.gateway.fuzz_isolated WORKDIR EXAMPLES_PER_OPERATION
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Spawner

PLAN = json.dumps({"subtasks": [{"task": f"part {n}", "expected_tokens": 16} for n in range(2)]})


def main(workdir: Path, examples: int) -> dict[str, Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    spawner = Spawner(workdir)
    try:
        gateway = spawner.gateway(f"sqlite:///{workdir / 'fuzz.db'}", probe_interval=0.5)
        for name in ("fuzz-a", "fuzz-b"):
            sim = spawner.sim(2000, model="llama3", extra=("--structured-reply", PLAN))
            body = {"url": sim.url, "name": name}
            httpx.post(f"{gateway.url}/fleet/neurons", json=body).raise_for_status()
        har = workdir / "fuzz.har"
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{gateway.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(examples),
                "--phases",
                "examples,coverage,fuzzing",
                "--request-timeout",
                "30",
                "--workers",
                "2",
                "--seed",
                "7",
                "--generation-database",
                "none",
                "--no-color",
                "--report",
                "har",
                "--report-har-path",
                str(har),
            ],
            capture_output=True,
            text=True,
            cwd=workdir,
            check=False,
        )
        (workdir / "schemathesis.log").write_text(run.stdout + run.stderr)
        entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    finally:
        spawner.close()
    errors = [
        {
            "method": e["request"]["method"],
            "url": e["request"]["url"],
            "status": e["response"]["status"],
            "body": e["response"]["content"].get("text", "")[:300],
        }
        for e in entries
        if e["response"]["status"] >= 500
    ]
    return {"requests": len(entries), "server_errors": errors, "exit": run.returncode}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
