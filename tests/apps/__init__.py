"""Importable app modules for worker-subprocess tests (``ferroq worker apps.<module>:app``).

They read the database URL from ``FERROQ_DATABASE_URL`` and their tuning from ``TEST_*``
environment variables, and write start/finish rows to the ``ledger`` table of the test's schema.
"""
