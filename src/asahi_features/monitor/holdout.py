"""Holdout assignment: which requests form the control group (deliberately not enriched).

A request is held out when a keyed BLAKE2b hash of ``(task_type, unit_id)`` (the key
derived from ``monitor.seed``), mapped to ``[0, 1)``, falls below its task's holdout
fraction: a pure function of the ids, the task type, the fraction and the key, so one
user always gets the same treatment for a task type. :class:`Holdout` holds the
configured fractions of one monitor (see :meth:`FeatureMonitor.is_held_out
<asahi_features.monitor.FeatureMonitor.is_held_out>`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Dict, Mapping, Optional

from ..errors import ConfigError

__all__ = ["Holdout", "check_fractions", "holdout_key", "in_holdout"]

_SCALE = 18446744073709551616.0
"""2**64: the 8-byte digest as a fraction of this is uniform on ``[0, 1)``."""


def check_fractions(fractions: Mapping[str, float]) -> Dict[str, float]:
    """A copy of ``monitor.holdout_fraction`` once every fraction is in ``[0, 1]``.

    Raises:
        ConfigError: a fraction outside ``[0, 1]`` (or NaN), naming its key.
    """
    for task, fraction in fractions.items():
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ConfigError(
                f"monitor.holdout_fraction[{task!r}] must be between 0 and 1, got {fraction}",
                key_path=f"monitor.holdout_fraction.{task}",
            )
    return dict(fractions)


def holdout_key(seed: int) -> bytes:
    """The BLAKE2b key of the assignment: 16 bytes derived from ``monitor.seed``."""
    return hashlib.blake2b(str(seed).encode(), digest_size=16).digest()


def in_holdout(task_type: str, unit_id: Optional[str], fraction: float, key: bytes) -> bool:
    """Is ``unit_id`` in the control group of ``task_type`` at this ``fraction``?

    Never without a ``unit_id``; always at a fraction of 1 or more, never at 0 or less.
    Any text is accepted, lone surrogates included.
    """
    if unit_id is None or fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    # "surrogatepass": an id with a lone surrogate (json.loads of a cut emoji) hashes
    # too; every other id gives the same bytes (and the same group) as plain UTF-8
    text = f"{task_type}\x1f{unit_id}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") < fraction * _SCALE


class Holdout:
    """The holdout fractions of one monitor (``"*"`` applies to every task type) and
    its key.

    Raises:
        ConfigError: a fraction outside ``[0, 1]``.
    """

    __slots__ = ("_default", "_fractions", "key")

    def __init__(self, fractions: Mapping[str, float], seed: int) -> None:
        self._fractions = check_fractions(fractions)
        self._default = self._fractions.get("*", 0.0)
        self.key = holdout_key(seed)

    def fraction(self, task_type: str) -> float:
        """The holdout share of ``task_type``."""
        return self._fractions.get(task_type, self._default)

    def held_out(self, task_type: str, unit_id: Optional[str]) -> bool:
        """:func:`in_holdout` at this task's fraction."""
        if unit_id is None:
            return False
        return in_holdout(task_type, unit_id, self.fraction(task_type), self.key)
