"""Scoring finished runs (LangSmith evaluators or plain functions) and recording the
quality of their enrichments, offline.
"""

from __future__ import annotations

import inspect
import logging
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Union,
)

from ..models import EnrichmentResult
from .model_calls import ModelCall, model_call_of_run
from .provenance import _produced
from .runs import _outputs_in_tree

if TYPE_CHECKING:
    from .handler import FeatureMonitorCallbackHandler
logger = logging.getLogger("asahi_features.langchain")

Evaluator = Union[Any, Callable[..., Any]]
"""A LangSmith ``RunEvaluator`` (anything with ``evaluate_run(run, example)``) or a plain
function of ``run`` (and optionally ``example``), or of the LangSmith argument names
``inputs`` / ``outputs`` / ``reference_outputs`` / ``run`` / ``example``."""


# -- scores -----------------------------------------------------------------------------


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _scores_of(outcome: Any, default_key: str) -> List[tuple[str, float]]:
    """(key, score) pairs from what an evaluator returned (numbers, dicts, results)."""
    if outcome is None:
        return []
    number = _number(outcome)
    if number is not None:
        return [(default_key, number)]
    if isinstance(outcome, Mapping):
        if "results" in outcome and "score" not in outcome:
            return _scores_of(list(outcome["results"]), default_key)
        score = _number(outcome.get("score"))
        return [(str(outcome.get("key") or default_key), score)] if score is not None else []
    if isinstance(outcome, (list, tuple)):
        pairs: List[tuple[str, float]] = []
        for item in outcome:
            pairs.extend(_scores_of(item, default_key))
        return pairs
    if hasattr(outcome, "score"):  # langsmith EvaluationResult and alike
        score = _number(outcome.score)
        key = getattr(outcome, "key", None) or default_key
        return [(str(key), score)] if score is not None else []
    return []


_NAMED_ARGS = frozenset({"run", "example", "inputs", "outputs", "reference_outputs"})


class _Scorer:
    """Calls one evaluator the way LangSmith would and returns (key, score) pairs."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator: Any = evaluator
        self.native = callable(getattr(evaluator, "evaluate_run", None))
        if not self.native and not callable(evaluator):
            raise TypeError(
                f"an evaluator must be a langsmith RunEvaluator or a callable, "
                f"got {type(evaluator).__name__}"
            )
        self.key = str(getattr(evaluator, "__name__", None) or type(evaluator).__name__)
        self.named: Optional[List[str]] = None
        self.arity = 1
        if not self.native:
            params = [
                p
                for p in inspect.signature(evaluator).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            names = [p.name for p in params]
            if names and set(names) <= _NAMED_ARGS and names not in (["run"], ["run", "example"]):
                self.named = names
            self.arity = 2 if len(params) >= 2 else 1

    def __call__(self, run: Any, example: Any) -> List[tuple[str, float]]:
        if self.native:
            outcome = self.evaluator.evaluate_run(run, example)
        elif self.named is not None:
            values = {
                "run": run,
                "example": example,
                "inputs": getattr(run, "inputs", None),
                "outputs": getattr(run, "outputs", None),
                "reference_outputs": getattr(example, "outputs", None),
            }
            outcome = self.evaluator(**{name: values[name] for name in self.named})
        elif self.arity == 2:
            outcome = self.evaluator(run, example)
        else:
            outcome = self.evaluator(run)
        return _scores_of(outcome, self.key)


def _quality(pairs: Sequence[tuple[str, float]], key: Optional[str]) -> Optional[float]:
    values = [score for k, score in pairs if key is None or k == key]
    return sum(values) / len(values) if values else None


@dataclass
class RunQuality:
    """The quality recorded for one run."""

    run_id: str
    """Id of the (root) run that was scored."""
    score: Optional[float]
    """The recorded quality (mean of the selected scores); ``None`` when none applied."""
    enrichment_ids: List[str] = field(default_factory=list)
    """Enrichments of the run that the score was given to."""
    scores: Dict[str, float] = field(default_factory=dict)
    """Every score the evaluators gave, by key (the last one of a repeated key)."""
    recorded: int = 0
    """How many enrichments accepted the score (``FeatureMonitor.record_quality``)."""
    model: Optional[str] = None
    """The model that answered (the last chat model call of the run tree), recorded
    with the score together with the tokens of every model call; ``None`` when no model
    run named its model."""


def _record(
    monitor: Any,
    enrichments: Sequence[EnrichmentResult],
    score: Optional[float],
    call: Optional[ModelCall] = None,
) -> int:
    """Record ``score`` for each enrichment, with the answering model when known."""
    if score is None:
        return 0
    recorded = 0
    model = call.as_kwargs() if call is not None else {}
    for result in enrichments:
        try:
            monitor.record_enrichment(result)  # idempotent: makes the id known
            if monitor.record_quality(result.enrichment_id, score, **model):
                recorded += 1
        except Exception:
            logger.exception("recording quality for enrichment %s failed", result.enrichment_id)
    return recorded


def _produced_only(found: Iterable[EnrichmentResult], run_id: str) -> List[EnrichmentResult]:
    """The runnable's own results among ``found``, once each (look-alikes are dropped
    and logged before deduplication, so a look-alike reusing a real id hides nothing)."""
    kept: Dict[str, EnrichmentResult] = {}
    for candidate in found:
        result = _produced(candidate)
        if result is None:
            logger.debug(
                "run %s: an output looks like enrichment %s but no "
                "FeatureEnrichmentRunnable produced it; not recorded",
                run_id,
                _describe_id(candidate),
            )
        else:
            kept.setdefault(result.enrichment_id, result)
    return list(kept.values())


def _describe_id(candidate: Any) -> str:
    eid = getattr(candidate, "enrichment_id", None)
    return repr(eid[:40]) if isinstance(eid, str) else "(no id)"


def _merge(*groups: Iterable[EnrichmentResult]) -> List[EnrichmentResult]:
    merged: Dict[str, EnrichmentResult] = {}
    for group in groups:
        for result in group:
            merged.setdefault(result.enrichment_id, result)
    return list(merged.values())


def _evaluate_one(
    run: Any,
    example: Any,
    scorers: Sequence[_Scorer],
    monitor: Any,
    key: Optional[str],
    handler: Optional[FeatureMonitorCallbackHandler],
) -> RunQuality:
    pairs: List[tuple[str, float]] = []
    for scorer in scorers:
        try:
            pairs.extend(scorer(run, example))
        except Exception:
            logger.exception("evaluator %s failed on run %s", scorer.key, getattr(run, "id", "?"))
    return _record_pairs(run, pairs, monitor, key, handler)


def _record_pairs(
    run: Any,
    pairs: Sequence[tuple[str, float]],
    monitor: Any,
    key: Optional[str],
    handler: Optional[FeatureMonitorCallbackHandler],
) -> RunQuality:
    run_id = str(getattr(run, "id", ""))
    known = handler.enrichments_for_run(run_id) if handler is not None else []
    enrichments = _merge(_produced_only(_outputs_in_tree(run), run_id), known)
    score = _quality(pairs, key)
    call = model_call_of_run(run) if score is not None and enrichments else None
    recorded = _record(monitor, enrichments, score, call)
    return RunQuality(
        run_id=run_id,
        score=score,
        enrichment_ids=[e.enrichment_id for e in enrichments],
        scores=dict(pairs),
        recorded=recorded,
        model=call.model if call is not None else None,
    )


# -- offline evaluation -----------------------------------------------------------------


def evaluate_runs(
    runs: Iterable[Any],
    evaluators: Sequence[Evaluator],
    monitor: Any,
    *,
    examples: Optional[Sequence[Any]] = None,
    key: Optional[str] = None,
    handler: Optional[FeatureMonitorCallbackHandler] = None,
) -> List[RunQuality]:
    """Score finished runs and record the quality of each run's enrichments. Offline.

    Args:
        runs: finished run trees (e.g. ``handler.finished_runs``, or runs from
            ``langchain_core.tracers.context.collect_runs``).
        evaluators: LangSmith ``RunEvaluator`` objects or plain functions returning a
            score (number, bool, ``{"key", "score"}`` dict or ``EvaluationResult``).
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        examples: reference examples aligned with ``runs`` (passed to evaluators).
        key: which score is the quality (default: the mean of all scores).
        handler: a handler that saw the runs (adds the enrichments it recorded).

    Returns:
        One :class:`RunQuality` per run.

    Raises:
        TypeError: an evaluator is neither a RunEvaluator nor callable.
        ValueError: ``examples`` is not as long as ``runs``.
    """
    scorers = [_Scorer(e) for e in evaluators]
    run_list = list(runs)
    example_list = list(examples) if examples is not None else [None] * len(run_list)
    if len(example_list) != len(run_list):
        raise ValueError(f"got {len(run_list)} runs but {len(example_list)} examples")
    return [
        _evaluate_one(run, example, scorers, monitor, key, handler)
        for run, example in zip(run_list, example_list, strict=True)
    ]


def record_langsmith_results(
    results: Iterable[Any],
    monitor: Any,
    *,
    key: Optional[str] = None,
    handler: Optional[FeatureMonitorCallbackHandler] = None,
) -> List[RunQuality]:
    """Record the scores of ``langsmith.evaluate(..., upload_results=False)`` in a monitor.

    Each result row (``{"run", "example", "evaluation_results"}``) gives a quality: the
    score named ``key``, or the mean of all numeric scores. It is attached to every
    enrichment found in the row's run tree (and, with ``handler``, those it recorded).

    Args:
        results: the ``ExperimentResults`` (or any iterable of its rows).
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        key: the evaluator key to use as quality (default: the mean of all).
        handler: a handler attached to the evaluated chain, if any.

    Returns:
        One :class:`RunQuality` per row.
    """
    recorded: List[RunQuality] = []
    for row in results:
        get = row.get if isinstance(row, Mapping) else (lambda k, r=row: getattr(r, k, None))
        run = get("run")
        evaluation = get("evaluation_results")
        pairs = _scores_of(evaluation, "score")
        recorded.append(_record_pairs(run, pairs, monitor, key, handler))
    return recorded


def offline_langsmith_client() -> Any:
    """A ``langsmith.Client`` that never sends anything (for ``langsmith.evaluate``).

    It points at a closed loopback port and samples no run for tracing, so an
    evaluation with ``upload_results=False`` needs no account and opens no connection.
    """
    from langsmith import Client

    return Client(
        api_url="http://127.0.0.1:9",
        api_key="offline",
        auto_batch_tracing=False,
        tracing_sampling_rate=0.0,
    )


def _as_example(item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    from langsmith.schemas import Example

    if "inputs" not in item:
        raise ValueError(
            f"an evaluation example dict needs 'inputs' (and optionally 'outputs'), "
            f"got keys {sorted(map(str, item))}"
        )
    return Example(
        id=item.get("id") or uuid.uuid4(),
        dataset_id=item.get("dataset_id") or uuid.uuid4(),
        inputs=dict(item["inputs"]),
        outputs=dict(item["outputs"]) if item.get("outputs") is not None else None,
    )


def evaluate_offline(
    target: Any,
    data: Sequence[Any],
    evaluators: Sequence[Any],
    monitor: Any,
    *,
    key: Optional[str] = None,
    handler: Optional[FeatureMonitorCallbackHandler] = None,
    **kwargs: Any,
) -> List[RunQuality]:
    """Run ``langsmith.evaluate`` fully offline and record the scores in ``monitor``.

    Args:
        target: the chain (or a function of the example inputs) to evaluate.
        data: ``langsmith.schemas.Example`` objects, or dicts with ``inputs`` and
            optional ``outputs`` (reference outputs); no dataset is fetched.
        evaluators: LangSmith evaluators (see ``langsmith.evaluate``).
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor`.
        key: the evaluator key to use as quality (default: the mean of all).
        handler: a handler attached to ``target``, if any.
        **kwargs: passed on to ``langsmith.evaluate`` (default ``max_concurrency=0``).

    Returns:
        One :class:`RunQuality` per example.
    """
    import langsmith

    examples = [_as_example(item) for item in data]
    kwargs.setdefault("max_concurrency", 0)
    kwargs.setdefault("client", offline_langsmith_client())
    with langsmith.tracing_context(enabled=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*upload_results.*")
        results = langsmith.evaluate(
            target, data=examples, evaluators=list(evaluators), upload_results=False, **kwargs
        )
        rows = list(results)
    return record_langsmith_results(rows, monitor, key=key, handler=handler)
