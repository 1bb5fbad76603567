"""Where the test suite lives."""

from __future__ import annotations

from pathlib import Path

#: The ``tests/`` directory (on ``sys.path`` for the suite and its worker subprocesses).
TESTS_DIR = Path(__file__).resolve().parent.parent
