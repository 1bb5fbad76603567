"""Turn the fault suite's measurements into one table: a row per scenario, each figure over
every run (``a / b / c`` for three runs).

    for run in 1 2 3; do FERROQ_FAULT_REPORT=faults.jsonl bash scripts/test.sh tests/faults; done
    python tests/faults/report.py faults.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

COLUMNS = [
    ("jobs", "jobs"),
    ("lost", "lost"),
    ("same_job_overlaps", "same-job overlaps"),
    ("queue_overlaps", "queue overlaps"),
    ("stale_accepted", "stale accepted"),
    ("hangs", "hangs"),
    ("recovery_s", "recovery / stall (s)"),
]


def _cell(values: list) -> str:
    def one(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    return " / ".join(one(v) for v in values)


def main(path: str) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    with open(path) as lines:
        for line in lines:
            row = json.loads(line)
            runs[row["scenario"]].append(row)
    extras = sorted(
        {key for rows in runs.values() for row in rows for key in row}
        - {key for key, _ in COLUMNS}
        - {"scenario", "at", "reruns"}
    )
    print("| scenario | " + " | ".join(title for _, title in COLUMNS) + " | other figures |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for scenario, rows in runs.items():
        cells = [_cell([row.get(key) for row in rows]) for key, _ in COLUMNS]
        other = "; ".join(
            f"{key} {_cell([row.get(key) for row in rows])}" for key in extras if any(key in row for row in rows)
        )
        print(f"| {scenario} | " + " | ".join(cells) + f" | {other} |")


if __name__ == "__main__":
    main(sys.argv[1])
