"""`make demo`: start the sandbox on loopback, import sample_data/ with configs/demo.yaml, stop.

Exits 0 when the import accounted for every row (exit 0 or 1: the sample data holds rows
that are meant to land in the dead-letter file), and with the import's code otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from importer.sandbox.launcher import launched

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    (ROOT / "out" / "demo").mkdir(parents=True, exist_ok=True)
    sandbox_args = [
        "--rate",
        "60000",
        "--period",
        "60",
        "--record",
        "out/demo/sandbox_record.jsonl",
    ]
    with launched(sandbox_args, cwd=ROOT) as (_, url):
        print(f"demo: sandbox listening on {url}")
        command = [
            sys.executable,
            "-m",
            "importer",
            "run",
            "configs/demo.yaml",
            "--base-url",
            url,
            "--rate",
            "60000",
            "--fresh",
        ]
        print("demo: pacing at 60,000 updates a minute (a raised limit) so the demo takes seconds")
        print("demo: moe-import " + " ".join(command[3:]))
        code = subprocess.call(command, cwd=ROOT)
    report = json.loads((ROOT / "out" / "demo" / "report.json").read_text())
    settled = sum(
        report[k]
        for k in ("rows_accepted", "rows_skipped", "rows_invalid", "rows_rejected", "rows_failed")
    )
    print(
        f"demo: {report['rows_read']:,} rows read, {settled:,} accounted for; "
        f"dead letters in {report['dead_letter']}"
    )
    if code in (0, 1) and settled == report["rows_read"]:
        return 0
    return code or 1


if __name__ == "__main__":
    sys.exit(main())
