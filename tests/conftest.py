import os

import pytest
from hypothesis import HealthCheck, settings

# CI: deterministic examples, no deadline (2 slow cores). Locally: HYPOTHESIS_PROFILE=dev.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# `make test-peers` (and so CI) sets INT4REF_REQUIRE_PEERS=1: there a test marked `peer` that
# skips (its library is missing) is a failure, so a parity claim is never silently unchecked.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("INT4REF_REQUIRE_PEERS") == "1" and report.skipped
            and item.get_closest_marker("peer") is not None):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"INT4REF_REQUIRE_PEERS=1 but this peer test skipped: {reason}"
