"""``FeatureMonitorCallbackHandler``: records every enrichment of a chain in a monitor,
tied to the chain's root run.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Deque,
    Dict,
    List,
    Optional,
)
from uuid import UUID

from langchain_core.tracers.base import BaseTracer

from ..models import EnrichmentResult
from .evaluation import Evaluator, RunQuality, _evaluate_one, _Scorer
from .model_calls import ModelCall, model_call_of_run
from .provenance import _produced
from .runs import _enrichment_of_outputs
from .tracing import ENRICHMENT_EVENT, TracedEnrichment

if TYPE_CHECKING:
    from langchain_core.tracers.schemas import Run
logger = logging.getLogger("asahi_features.langchain")

# -- the tracer -------------------------------------------------------------------------


class FeatureMonitorCallbackHandler(BaseTracer):
    """Records every enrichment of a chain in a monitor, tied to the chain's root run.

    Attach it to any chain that contains a :class:`FeatureEnrichmentRunnable` (as a
    callback in the config). Each enrichment step that ends is recorded in ``monitor``
    and remembered under the id of its root run (and its own run id), so that
    :meth:`record_run_quality` (or an evaluator) attaches a quality score to it. With
    ``evaluators``, every finished root run is scored right away.

    Only results that a :class:`FeatureEnrichmentRunnable` produced (the very object it
    returned, found by identity in a weak registry) are recorded. Another step's output
    that merely looks like a result (a dict with the same keys, an ``EnrichmentResult``
    built or copied by hand, an :class:`EnrichedPrompt` wrapping one) is ignored and
    logged at DEBUG, so no step can feed the monitor forged outcomes (e.g. store
    failures that would pause enrichment).

    Runs inline (also in async chains), so evaluators should be quick; slow scoring
    belongs in :func:`evaluate_runs` over :attr:`finished_runs` later. Nothing here
    touches the network.

    Args:
        monitor: the :class:`~asahi_features.monitor.FeatureMonitor` to record into.
        evaluators: LangSmith ``RunEvaluator`` objects or plain functions (see
            :data:`Evaluator`) run on every finished root run.
        key: which evaluator score is the quality (default: the mean of all).
        max_tracked_runs: how many run ids are remembered for late scores (oldest first
            out).
        keep_finished_runs: how many finished root runs :attr:`finished_runs` keeps
            (whole run trees: the model runs' inputs hold the prompts, so keep few, or
            ``0`` when no evaluator needs them later).

    Example:
        >>> handler = FeatureMonitorCallbackHandler(monitor)  # doctest: +SKIP
        >>> chain.invoke("Hi", config={"callbacks": [handler], "run_id": run_id})  # doctest: +SKIP
        >>> handler.record_run_quality(run_id, 0.9)  # doctest: +SKIP
        1
    """

    name: str = "asahi_features_monitor"
    run_inline: bool = True

    def __init__(
        self,
        monitor: Any,
        *,
        evaluators: Sequence[Evaluator] = (),
        key: Optional[str] = None,
        max_tracked_runs: int = 10_000,
        keep_finished_runs: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_tracked_runs < 1:
            raise ValueError(f"max_tracked_runs must be at least 1, got {max_tracked_runs}")
        self.monitor = monitor
        self.key = key
        self._scorers = [_Scorer(e) for e in evaluators]
        self._max_tracked = max_tracked_runs
        self._lock = threading.Lock()
        self._by_run: OrderedDict[str, Dict[str, EnrichmentResult]] = OrderedDict()
        # root run id -> the model that answered it; an enrichment step's run -> its root
        self._calls: OrderedDict[str, ModelCall] = OrderedDict()
        self._root_of: OrderedDict[str, str] = OrderedDict()
        self.finished_runs: Deque[Run] = deque(maxlen=max(0, keep_finished_runs))
        """The most recent finished root runs (for :func:`evaluate_runs`)."""
        self.evaluations: Deque[RunQuality] = deque(maxlen=max(0, keep_finished_runs))
        """What the evaluators recorded for the most recent root runs."""
        self.latest_root_run_id: Optional[str] = None
        """Id of the most recently finished root run."""

    # -- tracer hooks ------------------------------------------------------------------

    def _collect(self, run: Run) -> None:
        candidate = _enrichment_of_outputs(run.outputs)
        if candidate is None:
            return
        result = _produced(candidate)
        if result is None:
            logger.debug(
                "run %s (%s): its output looks like an enrichment result but no "
                "FeatureEnrichmentRunnable produced it; not recorded",
                run.id,
                run.name,
            )
            return
        self._remember(str(run.trace_id or run.id), str(run.id), result)

    def _remember(self, root: str, own: str, result: EnrichmentResult) -> None:
        """Tie ``result`` to its root run and its own run; record it once."""
        eid = result.enrichment_id
        with self._lock:
            new = False
            for run_id in (root, own):
                known = self._by_run.get(run_id)
                if known is None:
                    known = self._by_run[run_id] = {}
                    while len(self._by_run) > self._max_tracked:
                        self._by_run.popitem(last=False)
                if eid not in known:
                    known[eid] = result
                    new = True
            if own != root:
                self._root_of[own] = root
                while len(self._root_of) > self._max_tracked:
                    self._root_of.popitem(last=False)
        if new:
            try:
                self.monitor.record_enrichment(result)
            except Exception:
                logger.exception("monitor.record_enrichment failed")

    def _on_chain_end(self, run: Run) -> None:
        self._collect(run)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """An agent's enrichment (:class:`FeatureContextMiddleware` announces each one
        as the ``asahi_features.enrichment`` event of its model node's run): tied to the
        agent's root run like a runnable's output."""
        if name != ENRICHMENT_EVENT:
            return
        result = _produced(data.result if isinstance(data, TracedEnrichment) else None)
        if result is None:
            logger.debug("run %s: an enrichment event nobody vouches for; not recorded", run_id)
            return
        run = self.run_map.get(str(run_id))
        root = str(run.trace_id or run.id) if run is not None else str(run_id)
        self._remember(root, str(run_id), result)

    def _persist_run(self, run: Run) -> None:
        # Called when a root run ends, before _on_chain_end of that same run.
        self._collect(run)
        root = str(run.id)
        self.latest_root_run_id = root
        call = model_call_of_run(run)
        if call is not None:
            with self._lock:
                self._calls[root] = call
                while len(self._calls) > self._max_tracked:
                    self._calls.popitem(last=False)
        self.finished_runs.append(run)
        if self._scorers:
            self.evaluations.append(self.evaluate_run(run))

    # -- quality -----------------------------------------------------------------------

    def enrichments_for_run(self, run_id: Any) -> List[EnrichmentResult]:
        """The enrichments recorded under a root run id (or an enrichment step's id)."""
        with self._lock:
            return list(self._by_run.get(str(run_id), {}).values())

    def model_call_for_run(self, run_id: Any) -> Optional[ModelCall]:
        """The model that answered a finished run (the last chat model call of its
        tree) and the tokens of all its model calls; ``None`` when the run has not
        finished, is forgotten, or no model run named its model."""
        key = str(run_id)
        with self._lock:
            call = self._calls.get(key)
            if call is None:
                root = self._root_of.get(key)
                call = self._calls.get(root) if root is not None else None
        return call

    def record_run_quality(
        self,
        run_id: Any,
        score: Any,
        *,
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
    ) -> int:
        """Attach a quality score for a run to every enrichment of that run.

        The score is also counted for the model that answered the run, per task
        (``get_stats()["task_types"][task]["models"]``, ``monitor.compare``): read from
        the run's chat model runs (:meth:`model_call_for_run`), or given here.

        Args:
            run_id: the root run id (e.g. the ``run_id`` you passed in the config), or the
                id of the enrichment step's own run.
            score: a number (higher is better), a bool, or an object with ``.score``.
            model: the model's name, when the run does not name it (or to override it).
            input_tokens: prompt tokens of the run (default: the sum over its model calls).
            output_tokens: completion tokens of the run (default: likewise).

        Returns:
            How many enrichments accepted the score (0 when the run had none).
        """
        enrichments = self.enrichments_for_run(run_id)
        if not enrichments:
            logger.debug("no enrichment known for run %s", run_id)
        call = self.model_call_for_run(run_id)
        kwargs: Dict[str, Any] = call.as_kwargs() if call is not None else {}
        given = {"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens}
        kwargs.update({name: value for name, value in given.items() if value is not None})
        if "model" not in kwargs:
            kwargs = {}  # usage without a model has nowhere to go
        recorded = 0
        for result in enrichments:
            try:
                if self.monitor.record_quality(result.enrichment_id, score, **kwargs):
                    recorded += 1
            except Exception:
                logger.exception("monitor.record_quality failed")
        return recorded

    def evaluate_run(self, run: Any, example: Any = None) -> RunQuality:
        """Score one finished run with this handler's evaluators and record the quality."""
        return _evaluate_one(run, example, self._scorers, self.monitor, self.key, self)
