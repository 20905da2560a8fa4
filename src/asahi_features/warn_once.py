"""``WarnOnce``: which causes a component already warned about.

Wiring mistakes (no identity, an unknown task type, a feature node dropped before the
answer) are logged at WARNING the first time a cause is seen and at DEBUG after that, so a
busy service logs each mistake once instead of once per request.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

MAX_WARNED = 64
"""Distinct causes one component warns about (task types can come from clients: bounded)."""


class WarnOnce:
    """The causes a component already warned about (at most :data:`MAX_WARNED`)."""

    __slots__ = ("lock", "warned")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warned: set[Hashable] = set()

    def claim(self, cause: Hashable) -> bool:
        """True for the first caller with a new cause (while fewer than the bound)."""
        with self.lock:
            if cause in self.warned or len(self.warned) >= MAX_WARNED:
                return False
            self.warned.add(cause)
            return True
