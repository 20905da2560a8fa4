"""FeastClient (the old import path): the implementation lives in
:mod:`asahi_features.stores.feast`."""

from __future__ import annotations

from .feast.client import DEFAULT_REFRESH_INTERVAL_SECONDS, FeastClient

__all__ = ["DEFAULT_REFRESH_INTERVAL_SECONDS", "FeastClient"]
