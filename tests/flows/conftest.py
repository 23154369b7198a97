"""Fixtures for flow tests: one Prefect test harness (temporary SQLite database, local
subprocess API server) for the whole session, started on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """Run every flow of this package against a throwaway Prefect API (no ~/.prefect db)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
