"""FeastClient (the old import path): the implementation lives in
:mod:`asahi_features.stores.feast`."""

from __future__ import annotations

from .feast.client import DEFAULT_REFRESH_INTERVAL_SECONDS, FeastClient
from .feast.keys import BAD_ID_ERRORS as _BAD_ID_ERRORS
from .feast.keys import CONVERTERS as _CONVERTERS
from .feast.response import convert_value as _convert
from .feast.response import found_vector as _found_vector

__all__ = ["DEFAULT_REFRESH_INTERVAL_SECONDS", "FeastClient"]
__all__ += ["_BAD_ID_ERRORS", "_CONVERTERS", "_convert", "_found_vector"]  # tests
