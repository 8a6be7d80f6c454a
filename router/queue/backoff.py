"""The one retry delay of every queue: exponential, with jitter, never sooner than asked."""

from __future__ import annotations

import random

# 2 ** 64 steps is more than any cap; a larger exponent would only overflow the float.
_MAX_DOUBLINGS = 64


def retry_delay(
    attempts: int, base_seconds: float, max_seconds: float, at_least: float | None = None
) -> float:
    """Seconds before attempt `attempts + 1`: the step doubles per attempt from `base_seconds`
    up to `max_seconds`, the delay is drawn between half the step and all of it (so retries
    from many rows spread out), and it is never shorter than a provider's Retry-After."""
    step = min(max_seconds, base_seconds * 2.0 ** min(max(attempts - 1, 0), _MAX_DOUBLINGS))
    delay = random.uniform(step / 2, step)
    return delay if at_least is None else max(delay, at_least)
