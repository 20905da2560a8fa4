"""The Feast backend: :class:`FeastClient` and its parts (one job per module).

- :mod:`.client`: the client (loading, resolution, reads, health);
- :mod:`.registry`: what the client knows about the project (entity types, views, plans);
- :mod:`.keys`: entity ids as values of the join key's type;
- :mod:`.response`: Feast's response protobuf read into FeatureVectors.
"""

from .client import DEFAULT_REFRESH_INTERVAL_SECONDS, FeastClient

__all__ = ["DEFAULT_REFRESH_INTERVAL_SECONDS", "FeastClient"]
