"""Fixtures of the fault suite: a throwaway PostgreSQL cluster, a fault-injecting TCP proxy,
and the report each scenario writes its measurements to.

The ledger (``helpers.Ledger``) is the source of truth of every scenario: each performer writes
its start and finish through its own connection, to a database the fault does not touch (the
test's schema on the shared server, or a SQLite file), so what ran is known whatever happened to
ferroq's own tables.

``FERROQ_FAULT_REPORT=path`` appends one JSON line per scenario (lost jobs, overlaps, stale
outcomes accepted, hung calls, recovery time); ``python tests/faults/report.py path`` turns
runs into the table README quotes.
"""

from __future__ import annotations

import json
import os
import time

import psycopg
import pytest
from helpers.pg_cluster import PgCluster
from helpers.tcp_proxy import TcpProxy


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster of this test process alone, which tests may stop, crash and
    restart. Each test gets it running (see ``cluster``)."""
    cluster = PgCluster()
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(pg_cluster):
    """The throwaway cluster, running, with a fresh ``test`` database."""
    if not pg_cluster.is_up():
        pg_cluster.start()
    pg_cluster.wait_until_up()
    with psycopg.connect(pg_cluster.admin_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS test WITH (FORCE)")
        admin.execute("CREATE DATABASE test")
    yield pg_cluster
    if not pg_cluster.is_up():
        pg_cluster.start()


@pytest.fixture
def proxy(cluster):
    """A TCP proxy in front of the throwaway cluster."""
    tcp = TcpProxy(cluster.port)
    yield tcp
    tcp.close()


@pytest.fixture
def fault_report(request):
    """``fault_report(**figures)`` records this scenario's measurements (see module doc)."""

    def record(**figures) -> None:
        row = {"scenario": request.node.name, "at": time.time(), **figures}
        print(f"\nFAULT {json.dumps(row)}")
        path = os.environ.get("FERROQ_FAULT_REPORT")
        if path:
            with open(path, "a") as out:
                out.write(json.dumps(row) + "\n")

    return record
