"""Settings for every test under tests/.

Hypothesis by default fails an example that takes over 200 ms and a strategy that
generates slowly: timed checks, which the suite keeps out of tests (docs/PERFORMANCE.md
holds the speeds), and which flake on a 2-core machine shared with brokers, chdb and
other jobs. The properties themselves are unchanged.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("authtrail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("authtrail")
