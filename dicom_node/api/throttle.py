"""Failed sign-ins slow a guesser down: after a few failures for one user name from one
address, that pair is refused for a while without its password being checked.

Counted in the database (``sign_in_failure``), so every node serving the dashboard from
one database holds a guesser to the same limit and a restart forgets nothing; keyed by
address and user name together, so that a guesser cannot lock a real user out from
elsewhere. argon2 makes every check cost tens of milliseconds already; this bounds how
many a guesser gets.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.orm import Session

from storage.models import SignInFailure


def _pair(address: str, name: str) -> ColumnElement[bool]:
    """The rows of one (address, user name) pair, as stored: cut to the columns' width,
    the name lower-cased."""
    return and_(SignInFailure.address == address[:64], SignInFailure.user_name == name.lower()[:64])


class SignInThrottle:
    """At most ``max_failures`` failed sign-ins per (address, user name) within
    ``window``; then that pair waits until the oldest failure leaves the window."""

    def __init__(self, max_failures: int = 5, window: timedelta = timedelta(minutes=15)) -> None:
        self.max_failures = max_failures
        self.window = window

    def wait(self, session: Session, address: str, name: str, now: datetime) -> timedelta:
        """How long until this pair may try again; zero when it may now."""
        since = now - self.window
        count, oldest = session.execute(
            select(func.count(), func.min(SignInFailure.failed_at)).where(
                _pair(address, name), SignInFailure.failed_at > since
            )
        ).one()
        if count < self.max_failures:
            return timedelta(0)
        return oldest + self.window - now

    def failed(self, session: Session, address: str, name: str, now: datetime) -> None:
        """Counts a failed sign-in, and forgets failures that have left every window."""
        session.execute(delete(SignInFailure).where(SignInFailure.failed_at <= now - self.window))
        session.add(SignInFailure(address=address[:64], user_name=name.lower()[:64], failed_at=now))

    def succeeded(self, session: Session, address: str, name: str) -> None:
        """A right password clears the pair's failures."""
        session.execute(delete(SignInFailure).where(_pair(address, name)))
