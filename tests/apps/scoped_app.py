"""An App whose database and scope the CLI must take from it (``--app apps.scoped_app:app``):
``TEST_APP_DATABASE_URL``, scope ``billing``."""

from __future__ import annotations

import os

import ferroq

app = ferroq.App(os.environ["TEST_APP_DATABASE_URL"], scope="billing")
