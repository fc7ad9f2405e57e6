import os

from hypothesis import HealthCheck, settings

# CI: deterministic examples, no deadline (2 slow cores). Locally: HYPOTHESIS_PROFILE=dev.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
