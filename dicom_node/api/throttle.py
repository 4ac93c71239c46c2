"""Failed sign-ins slow a guesser down: after a few failures for one user name from one
address, that pair is refused for a while without its password being checked.

Kept in the memory of the process serving the dashboard (a restart forgets it), keyed by
address and user name together, so that a guesser cannot lock a real user out from
elsewhere. argon2 makes every check cost tens of milliseconds already; this bounds how
many a guesser gets.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class SignInThrottle:
    """At most ``max_failures`` failed sign-ins per (address, user name) within
    ``window_s``; then that pair waits until the oldest failure leaves the window."""

    def __init__(self, max_failures: int = 5, window_s: float = 900.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def wait_s(self, address: str, name: str) -> float:
        """Seconds until this pair may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent((address, name.lower()), now)
            if len(failures) < self.max_failures:
                return 0.0
            return failures[0] + self.window_s - now

    def failed(self, address: str, name: str) -> None:
        """Counts a failed sign-in."""
        now = time.monotonic()
        with self._lock:
            self._recent((address, name.lower()), now).append(now)

    def succeeded(self, address: str, name: str) -> None:
        """A right password clears the pair's failures."""
        with self._lock:
            self._failures.pop((address, name.lower()), None)
