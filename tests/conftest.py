"""Test configuration: hypothesis profiles and the slow marker.

- ``HYPOTHESIS_PROFILE=dev`` (default locally): random examples, as hypothesis normally does.
- ``CI=true`` selects the ``ci`` profile: ``derandomize=True`` so CI is reproducible.
- Tests marked ``slow`` train at the paper's full configuration.  They are skipped unless
  ``--run-slow`` is given; under ``CI=true`` they run in a reduced form (``slow_scale`` fixture).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=30, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if ON_CI else "dev"))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="run the slow tests at full size (the paper's configuration)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or ON_CI:
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (CI runs a reduced form)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def slow_scale(request) -> str:
    """'full' with --run-slow, 'reduced' on CI: slow tests size their training by it."""
    return "full" if request.config.getoption("--run-slow") else "reduced"
