"""The bundled sample Feast repository (private: the public surface is ``sample_repo``).

Modules by job: ``definitions`` (entities, feature views, the sample task map, ids and
which of them are deliberately stale or partial), ``data`` (the seeded row generators)
and ``build`` (``feature_store.yaml``, Feast objects, Parquet files and the in-process
build). :mod:`asahi_features.sample_repo` re-exports the public names and holds the
command line.
"""
