"""The Feast backend: :class:`FeastClient` and its parts (one job per module).

- :mod:`.client`: the client (loading, registry re-reads, reads, async, health);
- :mod:`.registry`: what the client knows about the project (entity types, compound
  types, views, ttls, on-demand views' request fields, feature services) and read plans;
- :mod:`.resolution`: names and feature services resolved into plans;
- :mod:`.drift`: features that disappeared from the registry (one warning, recovery);
- :mod:`.keys`: entity ids as values of the join key's type;
- :mod:`.splitting`: valid ids read, invalid ones answered INVALID_ID in place;
- :mod:`.response`: Feast's response protobuf read into FeatureVectors.
"""

from .client import DEFAULT_REFRESH_INTERVAL_SECONDS, FeastClient

__all__ = ["DEFAULT_REFRESH_INTERVAL_SECONDS", "FeastClient"]
