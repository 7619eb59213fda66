"""Hypothesis settings of the state-machine tests (tests/test_*_states.py).

`ci` (the default) keeps the three files within about a minute on two cores;
`HYPOTHESIS_PROFILE=long` runs many more and longer programs (faults/props/README.md).
Derandomized in CI so a failure is never flaky; random in the long form, to explore.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_COMMON: dict[str, object] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}

PROFILES = {
    # (max_examples, stateful_step_count) per speed class of machine
    "ci": {"fast": (100, 40), "slow": (30, 25)},
    "long": {"fast": (3000, 100), "slow": (400, 60)},
}


def state_settings(speed: str) -> settings:
    """Settings for a machine whose steps are `fast` (pure) or `slow` (SQLite, HTTP, pty)."""
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if profile not in PROFILES:
        raise ValueError(f"HYPOTHESIS_PROFILE: unknown profile {profile!r} (ci or long)")
    examples, steps = PROFILES[profile][speed]
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=profile == "ci",
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        **_COMMON,  # type: ignore[arg-type]
    )
