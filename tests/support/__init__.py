"""Test-only helpers: servers started from fixtures, known workloads, fault backends
(the parts users need ship as :mod:`asahi_features.testing`)."""
