"""examples/typed_app.py uses every public API under `mypy --strict`; here it must also run."""

from __future__ import annotations

import subprocess
import sys

from helpers import TESTS_DIR, subprocess_env


def test_the_typed_example_runs_end_to_end(database_url):
    example = TESTS_DIR.parent / "examples" / "typed_app.py"
    done = subprocess.run(
        [sys.executable, str(example), database_url],
        env=subprocess_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "refused as expected: max_attempts must be at least 1" in done.stdout
