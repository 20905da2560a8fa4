"""Map LlamaIndex evaluation results back to enrichments and record their scores."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from llama_index.core.evaluation import EvaluationResult

from ..models import EnrichmentResult
from ..monitor.per_model import check_call
from .log import EnrichmentLog
from .nodes import ENRICHMENT_ID_METADATA_KEY, is_feature_context_node

if TYPE_CHECKING:
    from ..monitor import FeatureMonitor

logger = logging.getLogger(__name__)


EvaluationInput = Union[
    EvaluationResult,
    Sequence[EvaluationResult],
    Mapping[str, Sequence[EvaluationResult]],
]

CallLookup = Union[Mapping[str, Any], Callable[[str], Any]]
"""Enrichment id -> the LLM call that answered it: ``(model, input_tokens,
output_tokens)`` (any of them ``None``), e.g. ``FeatureMonitorEventHandler.llm_calls``."""


@dataclass
class EvaluationRecord:
    """What :func:`record_evaluation` did.

    Attributes:
        scores: enrichment id -> the quality score recorded for it.
        unmatched: evaluation positions that could not be mapped to an enrichment.
        invalid: results skipped because invalid or without score and passing.
    """

    scores: Dict[str, float] = field(default_factory=dict)
    unmatched: int = 0
    invalid: int = 0

    @property
    def recorded(self) -> int:
        """How many enrichments received a quality score."""
        return len(self.scores)


def enrichment_id_from_response(response: Any) -> Optional[str]:
    """The enrichment id carried by a response's feature context source node, if any.

    Works with ``Response``, ``StreamingResponse`` and chat responses (anything with
    ``source_nodes``). Un-enriched requests have no feature node and give ``None``.
    """
    for node in getattr(response, "source_nodes", None) or ():
        if is_feature_context_node(node):
            value = node.node.metadata.get(ENRICHMENT_ID_METADATA_KEY)
            return str(value) if value is not None else None
    return None


def _score_of(result: EvaluationResult) -> Optional[float]:
    if result.invalid_result:
        return None
    if result.score is not None and math.isfinite(float(result.score)):
        return float(result.score)
    if result.passing is not None:
        return 1.0 if result.passing else 0.0
    return None


def _as_list(value: Any) -> Optional[List[Any]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def record_evaluation(
    monitor: FeatureMonitor,
    results: EvaluationInput,
    *,
    queries: Union[str, Sequence[str], None] = None,
    responses: Any = None,
    enrichment_ids: Union[str, Sequence[Optional[str]], None] = None,
    log: Optional[EnrichmentLog] = None,
    evaluator: Optional[str] = None,
    calls: Optional[CallLookup] = None,
    model: Optional[str] = None,
) -> EvaluationRecord:
    """Record LlamaIndex evaluation scores as quality of the enrichments they evaluated.

    LlamaIndex evaluators emit no completion event, so scores are handed over here.
    ``results`` is one ``EvaluationResult``, a list of them, or the dict
    ``BatchEvalRunner`` returns (evaluator name -> list, every list aligned with the
    queries / responses it was given). Position ``i`` of each list is mapped to an
    enrichment by the first rule that applies:

    1. ``enrichment_ids[i]`` when given (e.g. from ``FeatureRequest.enrichment_ids``);
    2. the feature node in ``responses[i].source_nodes`` (exact, but only enriched
       requests carry such a node);
    3. the query (``result.query``, else ``queries[i]``) looked up in ``log`` (the
       postprocessor's or handler's :class:`EnrichmentLog`). A query asked ``n`` times
       in ``results`` maps to the ``n`` most recent enrichments of that query, oldest
       first; so re-running an evaluation set maps to the latest run. When the same
       query was asked for different users, pass ``enrichment_ids`` or ``responses``.

    Several evaluators scoring one enrichment are averaged (or pick one with
    ``evaluator``). A result's score is ``score``, else ``passing`` as 1.0/0.0; invalid
    results are skipped. Each enrichment known to ``log`` is first recorded with
    ``monitor.record_enrichment`` (idempotent), then ``monitor.record_quality`` gets the
    score, which the monitor files under "with" or "without features".

    Per model: when ``calls`` knows the LLM call that answered an enrichment (the
    :class:`FeatureMonitorEventHandler` passes its own), the score is recorded with its
    ``model=``, ``input_tokens=`` and ``output_tokens=``, so it also counts for that
    model in ``get_stats()["task_types"][task]["models"]`` and ``monitor.compare``.
    ``model`` names the model of every result instead (the tracked token counts are
    still used).

    Args:
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        results: the evaluation results.
        queries: the queries evaluated, aligned with each result list.
        responses: the responses evaluated, aligned with each result list.
        enrichment_ids: explicit enrichment ids, aligned with each result list.
        log: where to look queries and ids up.
        evaluator: for a ``BatchEvalRunner`` dict, use only this evaluator's results.
        calls: enrichment id -> ``(model, input_tokens, output_tokens)``: a mapping or a
            callable returning ``None`` for unknown ids.
        model: the model that answered every evaluated request (overrides ``calls``'
            model names).

    Returns:
        An :class:`EvaluationRecord` with the recorded scores and what was skipped.

    Raises:
        KeyError: ``evaluator`` is not a key of the results dict (the message lists them).
        TypeError: ``results`` is not an EvaluationResult, list or dict of lists, or
            ``model`` is not a string.
        ValueError: ``model`` is blank.
    """
    if model is not None:
        check_call(model, None, None)  # a bad name fails before anything is recorded
    groups = _groups(results, evaluator)
    query_list = _as_list(queries)
    response_list = _as_list(responses)
    id_list = _as_list(enrichment_ids)

    record = EvaluationRecord()
    collected: Dict[str, List[float]] = {}
    known: Dict[str, EnrichmentResult] = {}
    # One scan of the log for all items (log.ids_for_query / log.get per item would
    # scan the whole ring each time).
    ids_by_query, result_by_id = _log_lookups(log) if log is not None else ({}, {})
    for items in groups:
        totals: Dict[str, int] = {}
        nth: List[int] = []
        for position, item in enumerate(items):
            query = item.query or _at(query_list, position)
            nth.append(totals.get(query, 0) if query is not None else 0)
            if query is not None:
                totals[query] = totals.get(query, 0) + 1
        for position, item in enumerate(items):
            score = _score_of(item)
            if score is None:
                record.invalid += 1
                continue
            query = item.query or _at(query_list, position)
            target: Optional[str] = _at(id_list, position)
            if target is None:
                target = enrichment_id_from_response(_at(response_list, position))
            if target is None and query is not None and log is not None:
                candidates = ids_by_query.get(query, [])[-totals[query] :]
                if nth[position] < len(candidates):
                    target = candidates[nth[position]]
            if target is None:
                record.unmatched += 1
                continue
            collected.setdefault(target, []).append(score)
            if log is not None and target not in known:
                found = result_by_id.get(target)
                if found is not None:
                    known[target] = found
    for enrichment_id, scores in collected.items():
        quality = sum(scores) / len(scores)
        call = _call_of(calls, enrichment_id, model)
        if enrichment_id in known:
            # records the enrichment if the monitor has not seen it, else adds the score
            monitor.record_enrichment(known[enrichment_id], inference_quality=quality, **call)
        else:
            monitor.record_quality(enrichment_id, quality, **call)
        record.scores[enrichment_id] = quality
    if record.unmatched:
        logger.warning(
            "%d evaluation result(s) could not be mapped to an enrichment; pass "
            "enrichment_ids=, responses= or queries= with log=",
            record.unmatched,
        )
    return record


def _call_of(calls: Optional[CallLookup], enrichment_id: str, model: Optional[str]) -> Any:
    """The ``model`` / ``input_tokens`` / ``output_tokens`` keywords for one enrichment
    (only those known)."""
    found: Any = None
    if calls is not None:
        try:
            found = calls.get(enrichment_id) if isinstance(calls, Mapping) else calls(enrichment_id)
        except Exception:  # a failing lookup costs the per-model data, never the score
            logger.warning("looking up the LLM call of %s failed", enrichment_id, exc_info=True)
    keywords: Dict[str, Any] = {}
    if found is not None:
        try:
            name, input_tokens, output_tokens = found
        except (TypeError, ValueError):
            name = getattr(found, "model", None)
            input_tokens = getattr(found, "input_tokens", None)
            output_tokens = getattr(found, "output_tokens", None)
        keywords = {"model": name, "input_tokens": input_tokens, "output_tokens": output_tokens}
    if model is not None:
        keywords["model"] = model
    return {k: v for k, v in keywords.items() if v is not None}


def _log_lookups(
    log: EnrichmentLog,
) -> Tuple[Dict[str, List[str]], Dict[str, Optional[EnrichmentResult]]]:
    """``log.ids_for_query`` for every query and ``log.get`` for every id, from one scan."""
    ids_by_query: Dict[str, List[str]] = {}
    seen: Dict[str, set[str]] = {}
    result_by_id: Dict[str, Optional[EnrichmentResult]] = {}
    for key, eid, result in log._entries():
        ids_seen = seen.setdefault(key, set())
        if eid not in ids_seen:
            ids_seen.add(eid)
            ids_by_query.setdefault(key, []).append(eid)
        result_by_id[eid] = result  # the newest entry of an id wins, as in log.get
    return ids_by_query, result_by_id


def _at(values: Optional[List[Any]], position: int) -> Any:
    if values is None or position >= len(values):
        return None
    return values[position]


def _groups(results: EvaluationInput, evaluator: Optional[str]) -> List[List[EvaluationResult]]:
    if isinstance(results, EvaluationResult):
        groups: List[List[EvaluationResult]] = [[results]]
    elif isinstance(results, Mapping):
        if evaluator is not None:
            if evaluator not in results:
                raise KeyError(
                    f"evaluator {evaluator!r} is not in the results; "
                    f"available: {', '.join(sorted(results)) or '(none)'}"
                )
            groups = [list(results[evaluator])]
        else:
            groups = [list(v) for v in results.values()]
    elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        groups = [list(results)]
    else:
        raise TypeError(
            "results must be an EvaluationResult, a list of them or a dict of lists "
            f"(BatchEvalRunner output), got {type(results).__name__}"
        )
    for group in groups:
        for item in group:
            if not isinstance(item, EvaluationResult):
                raise TypeError(f"expected EvaluationResult items, got {type(item).__name__}")
    return groups
