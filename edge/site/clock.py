"""The time doors decide at: the system clock, except when it is stepped.

A schedule, a contract's last day or a booking read at a time that jumped by
hours grants or refuses by the wrong rule: a `date -s` by hand, a wrong time
server, a box without a battery-backed clock set late at boot. Between two
readings the monotonic clock says how much time really passed. When the
system clock moves more than `STEP_S` away from that, the step is not
followed: decisions keep counting from before it, and the gateway raises an
alarm. When the cloud next vouches for a time (the `Date` of its answers), the
system clock is followed again if it agrees with the cloud; if it does not,
the cloud's time becomes the base until it does.

NTP's slewing (at most 0.5 ms a second) is followed as it happens: only a
jump between two readings counts as a step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.timeutil import iso_instant

log = logging.getLogger("edge.clock")

# A system clock this far from the cloud's is wrong (and this far behind a time
# the cloud vouched for, untrusted: edge.access.service).
CLOCK_TOLERANCE_S = 300.0

# A change of the system clock against the monotonic clock larger than this,
# between two readings, is a step.
STEP_S = 2.0


class SteadyClock:
    def __init__(
        self,
        tolerance_s: float = CLOCK_TOLERANCE_S,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tolerance_s = tolerance_s
        self._wall, self._mono = wall, mono
        self._offset = wall() - mono()
        # While the system clock is not followed: how far it is from ours (s).
        self.step: float | None = None

    def now(self) -> float:
        w, m = self._wall(), self._mono()
        ours = m + self._offset
        if self.step is None:
            if abs(w - ours) <= STEP_S:
                self._offset = w - m
                return w
            log.error(
                "clock: the system clock stepped by %+.0f s (to %s); deciding on %s, "
                "counted from before the step, until the cloud vouches for a time",
                w - ours,
                iso_instant(w),
                iso_instant(ours),
            )
        self.step = w - ours
        return ours

    def vouch(self, cloud: float) -> None:
        """The cloud said it is `cloud` now (to about a second)."""
        w, m = self._wall(), self._mono()
        if abs(w - cloud) <= self.tolerance_s:
            if self.step is not None:
                log.warning("clock: the system clock agrees with the cloud again; following it")
            self.step = None
            self._offset = w - m
        else:  # the system clock is wrong: count from the cloud's time
            if self.step is None:
                log.error(
                    "clock: the system clock (%s) is %+.0f s from the cloud's; deciding on "
                    "the cloud's time until they agree",
                    iso_instant(w),
                    w - cloud,
                )
            self._offset = cloud - m
            self.step = w - cloud
