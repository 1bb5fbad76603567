"""README's first command runs ``examples/demo.py`` (through ``scripts/demo.sh``): it must
process its jobs on the embedded SQLite default and end cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def test_the_demo_runs_its_jobs_to_the_end_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FERROQ_DATABASE_URL"}
    proc = subprocess.run(  # noqa: PLW1510 - the exit code is asserted below
        [sys.executable, os.path.join(EXAMPLES, "demo.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "jobs completed; order-2 took 3 attempts" in proc.stdout, proc.stdout
    assert "customer-0 ran in FIFO order" in proc.stdout
    assert (tmp_path / "ferroq.db").exists()
