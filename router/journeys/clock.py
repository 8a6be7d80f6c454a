"""The time journeys run by: the system clock, shifted only by tests.

Every journey decision (entering, due steps, quiet hours, the day the frequency cap counts)
reads `Clock.now()`, never the database's `now()`, so a test can move a run a day ahead
without waiting a day. The clock keeps real pace; `shift` moves it, and `real` turns a
journey time back into the wall-clock time a timer must wake at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def real(self, at: datetime) -> datetime:
        """The wall-clock time at which this clock reads `at`."""
        return at - self._offset

    def set(self, at: datetime) -> None:
        """From now on, read `at` and go on at real pace (tests only, through the harness)."""
        self._offset = at - datetime.now(UTC)
