"""Enrichment results in LangChain serialisation (``dumpd`` / ``load``) and LangGraph
checkpoints (``JsonPlusSerializer``), without "Deserializing unregistered type" warnings.

* :class:`SerializableEnrichmentResult` is an :class:`~asahi_features.models.EnrichmentResult`
  that LangChain can ``dumpd`` and ``load`` (``valid_namespaces=["asahi_features"]``) and
  whose plain dump holds only plain values (no enum objects), so a message carrying it
  (the features tool's ``ToolMessage.artifact``) checkpoints without warnings.
* :data:`SERDE_ALLOWLIST` and :func:`feature_serializer` register the result types with
  LangGraph's msgpack serializer, for a result kept in graph state.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from langchain_core.load.serializable import Serializable
from pydantic import field_serializer

from ..models import EnrichmentReason, EnrichmentResult, FeatureStatus

LC_NAMESPACE = ["asahi_features", "langchain", "serde"]
"""Where ``load`` finds :class:`SerializableEnrichmentResult` (pass
``valid_namespaces=["asahi_features"]``)."""


class SerializableEnrichmentResult(EnrichmentResult, Serializable):
    """An :class:`~asahi_features.models.EnrichmentResult` that LangChain's ``dumpd`` /
    ``load`` round-trip, and whose ``model_dump()`` has plain values (enums as their
    string values) so that checkpoints hold no custom types.

    Example:
        >>> from langchain_core.load import dumpd, load  # doctest: +SKIP
        >>> again = load(dumpd(serializable(result)),  # doctest: +SKIP
        ...              valid_namespaces=["asahi_features"],
        ...              allowed_objects=[SerializableEnrichmentResult])
    """

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Yes: it holds data only."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> List[str]:
        """:data:`LC_NAMESPACE`."""
        return list(LC_NAMESPACE)

    @field_serializer("reason")
    def _reason_value(self, value: Any) -> str:
        return str(getattr(value, "value", value))

    @field_serializer("entity_status")
    def _status_values(self, value: Dict[str, Any]) -> Dict[str, str]:
        return {k: str(getattr(v, "value", v)) for k, v in value.items()}

    def to_json(self) -> Any:
        """The LangChain constructor form, every value JSON-ready."""
        return {
            "lc": 1,
            "type": "constructor",
            "id": [*LC_NAMESPACE, type(self).__name__],
            "kwargs": self.model_dump(mode="json"),
        }


def serializable(result: EnrichmentResult) -> SerializableEnrichmentResult:
    """``result`` as a :class:`SerializableEnrichmentResult` (the same values and id; the
    original object is returned when it already is one)."""
    if isinstance(result, SerializableEnrichmentResult):
        return result
    return SerializableEnrichmentResult.model_construct(
        _fields_set=result.model_fields_set, **dict(result)
    )


SERDE_ALLOWLIST: Tuple[Tuple[str, str], ...] = tuple(
    (cls.__module__, cls.__name__)
    for cls in (EnrichmentResult, SerializableEnrichmentResult, EnrichmentReason, FeatureStatus)
)
"""``(module, name)`` of every type an enrichment result puts in a LangGraph checkpoint,
for ``JsonPlusSerializer(allowed_msgpack_modules=...)``."""


def feature_serializer(extra: Iterable[Tuple[str, ...]] = (), **kwargs: Any) -> Any:
    """A LangGraph ``JsonPlusSerializer`` that loads enrichment results (and ``extra``
    types) from checkpoints without warnings: ``InMemorySaver(serde=feature_serializer())``.

    It is an explicit allowlist (LangGraph's strict mode): types neither in
    :data:`SERDE_ALLOWLIST`, ``extra`` nor LangGraph's own safe list load as plain data.
    Graphs compiled with a checkpointer also add the types of their state schema.

    Args:
        extra: more ``(module, name)`` pairs to allow.
        **kwargs: passed on to ``JsonPlusSerializer``.
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    allowed = [*SERDE_ALLOWLIST, *(tuple(item) for item in extra)]
    return JsonPlusSerializer(allowed_msgpack_modules=allowed, **kwargs)
