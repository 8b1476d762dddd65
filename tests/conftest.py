"""Suite-wide settings.

Hypothesis: in CI (``CI`` set) examples are derandomized, so a run is reproducible and a
failure there is a failure everywhere; on a developer's machine they stay random, to keep
finding new cases. ``SHARDKV_HYPOTHESIS_PROFILE`` picks a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(
    os.environ.get("SHARDKV_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
