"""A worker app with one periodic entry, for the exactly-once tests of several processes.

Environment: ``FERROQ_DATABASE_URL`` (required), ``TEST_SCHEDULE`` (every 2 seconds).
"""

from __future__ import annotations

import os

import ferroq

app = ferroq.App(os.environ["FERROQ_DATABASE_URL"], stop_timeout=5.0)


@app.periodic(os.environ.get("TEST_SCHEDULE", "*/2 * * * * *"))
def tick(job: ferroq.Job) -> None:
    """Nothing to do: the test counts the jobs each tick inserted."""
