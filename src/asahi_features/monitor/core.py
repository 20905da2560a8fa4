"""The :class:`FeatureMonitor` class: the monitor's public API, each method a thin call.

One module on purpose (about 580 lines, two thirds of them docstrings): one class whose
methods are thin calls; their docstrings are the monitor's API reference.

A method checks its arguments, takes the monitor's lock and hands over to the module
whose job it is: :mod:`~asahi_features.monitor.recording` (what an enrichment or a score
changes), :mod:`~asahi_features.monitor.holdout` (the control group),
:mod:`~asahi_features.monitor.decision` and :mod:`~asahi_features.monitor.availability`
(should we enrich?), :mod:`~asahi_features.monitor.report` (``get_stats``),
:mod:`~asahi_features.monitor.compare`, :mod:`~asahi_features.monitor.persistence`,
:mod:`~asahi_features.monitor.shared` (replicas) and :mod:`~asahi_features.monitor.export`
(Prometheus). :class:`Decision`, :class:`DecisionReason` and :class:`ScoreEvent` are
importable from here too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from ..models import EnrichmentResult
from ..settings import MonitorConfig
from . import persistence, report
from .decision import (
    BreakerWatch,
    Decision,
    DecisionReason,
    breaker_decision,
    breaker_of,
    quality_decision,
)
from .holdout import Holdout
from .per_model import check_call
from .quality import coerce_score, quality_disabled
from .recording import ScoreEvent, Tally, notify_score, read_outcome

if TYPE_CHECKING:
    from .compare import ModelComparison
    from .shared import SharedState

__all__ = ["Decision", "DecisionReason", "FeatureMonitor", "ScoreEvent"]

logger = logging.getLogger("asahi_features.monitor")


class FeatureMonitor:
    """Tracks enrichment health and quality, and decides whether enrichment is worth it.

    Thread-safe: every update happens under one lock, so concurrent recording loses no
    record. Memory is bounded: latency is a fixed-size reservoir sample, quality is kept
    as running means/variances, the recent-availability window is a ring buffer, and the
    table that matches late quality scores to enrichments holds at most
    ``max_pending_quality`` ids (the oldest are evicted and counted).

    **Should we enrich?** (:meth:`should_enrich`, reason via :meth:`decision`)

    1. *Store failing persistently.* With a watched breaker (:meth:`watch`): ``False``
       while it is ``open``; ``True`` when half-open (so the guard's probe can run) and
       after it closes (closing also clears the recent-availability window).
       Independently, when at least ``failure_window_min_attempts`` of the last
       ``availability_window`` fetch attempts are known and fewer than
       ``min_availability_pct`` percent succeeded, enrichment is *paused*. While paused,
       one request per ``availability_probe_interval_seconds`` is let through as a
       probe; the first successful fetch attempt (or the watched breaker closing again)
       ends the pause and clears the window. No manual reset is ever needed.
    2. *Enrichment not helping.* Per task type, the "with features" group is compared
       with the *basis*: the held-out control group once it has ``min_samples`` scores,
       otherwise every scored request of the task that got no features
       (``quality_basis`` names which). Once both have ``min_samples`` scores, an
       **always-valid sequential test** (:mod:`asahi_features.monitor.sequential`)
       bounds ``gain = mean(with) - mean(basis)`` at every sample size at once, so the
       decision keeps its error rate however often it is read. Enrichment is disabled
       when the upper bound falls below ``min_quality_gain`` (when enrichment truly
       beats the margin, this happens with probability at most ``1 - confidence``,
       ever), and enabled again only when the lower bound rises above it (when it truly
       does not, at most ``1 - confidence`` as well). In between, the last decision
       stands, so it does not flip on noise. While disabled, a share
       ``exploration_fraction`` of calls still says ``True`` so the enriched group
       keeps receiving samples and the decision can change.

    **Many replicas.** With ``config.shared_state`` (Redis), replicas share their counts
    and one quality verdict through a background thread (:attr:`shared`,
    :mod:`asahi_features.monitor.shared`): recording stays in process, ``should_enrich``
    reads the shared verdict from memory and :meth:`get_stats` reports every replica.

    **Quality groups.** ``quality_with_features`` is the mean score of requests whose
    prompt received features; ``quality_without_features`` the mean of every scored
    request that got none (the specification's key). Of those, the deliberately
    held-out control group is also reported alone as ``quality_held_out`` and the rest
    as ``quality_fallback``. ``quality_delta`` is with features minus the basis. Each
    enrichment counts at most one quality score: later scores for the same id are
    counted as ``duplicate_quality_scores`` and ignored.

    Args:
        config: the ``monitor:`` section (defaults to ``MonitorConfig()``).
        breaker: a circuit breaker or a client with ``.breaker`` to watch (see
            :meth:`watch`).
        clock: monotonic seconds, for the probe interval (tests pass a fake clock).
        rng: random source for the exploration share (anything with ``random()``);
            defaults to ``random.Random(config.seed)``.

    Raises:
        ConfigError: a holdout fraction outside ``[0, 1]``.

    Example:
        >>> from asahi_features.models import EnrichmentResult
        >>> monitor = FeatureMonitor()
        >>> result = EnrichmentResult(original_prompt="Hi", enriched_prompt="[ctx] Hi",
        ...     features_used=["tier"], feature_tokens_added=4,
        ...     enrichment_latency_ms=1.5, features_available=True, store_attempted=True)
        >>> monitor.record_enrichment(result, inference_quality=0.8)
        >>> stats = monitor.get_stats()
        >>> stats["total_enrichments"], stats["quality_with_features"]
        (1, 0.8)
        >>> monitor.should_enrich("general")
        True
    """

    def __init__(
        self,
        config: Optional[MonitorConfig] = None,
        *,
        breaker: Any = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[Any] = None,
    ) -> None:
        self.config = config if config is not None else MonitorConfig()
        cfg = self.config
        self._holdout = Holdout(cfg.holdout_fraction, cfg.seed)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random(cfg.seed)
        self._lock = threading.Lock()
        self._breaker = BreakerWatch()
        self.score_observers: List[Callable[[ScoreEvent], None]] = []
        """Called with every quality score the monitor accepts (see :class:`ScoreEvent`;
        the OpenTelemetry integration, :mod:`asahi_features.telemetry`, is one)."""
        self._init_state()
        self._shared: Optional[SharedState] = None
        self._closers: list[Callable[[], None]] = []
        if breaker is not None:
            self.watch(breaker)
        if cfg.shared_state is not None:
            from .shared import attach

            attach(self, cfg.shared_state)

    def _init_state(self, restored: Optional[persistence.Restored] = None) -> None:
        """Start counting from zero, or from ``restored`` (call with the lock held)."""
        self._tally = Tally(self.config, restored)

    def __repr__(self) -> str:
        tally = self._tally
        return (
            f"FeatureMonitor(total_enrichments={tally.counters.total}, "
            f"tasks={len(tally.tasks)}, paused={tally.gate.paused})"
        )

    # ------------------------------------------------------------------ sharing

    @property
    def shared(self) -> Optional[SharedState]:
        """The state shared with other replicas (``monitor.shared_state``), or ``None``.

        With it, :meth:`should_enrich` follows the quality verdict of all replicas and
        :meth:`get_stats` reports all of them (see :mod:`asahi_features.monitor.shared`).
        """
        return self._shared

    def _attach_shared(self, shared: SharedState) -> None:
        self._shared = shared

    def _on_close(self, callback: Callable[[], None]) -> None:
        self._closers.append(callback)

    def close(self) -> None:
        """Stop the background threads: the multi-process Prometheus exporter copies
        its numbers and, with shared state, this replica writes its counts one last
        time. The monitor still records and decides afterwards, locally."""
        closers, self._closers = self._closers, []
        for callback in closers:
            callback()
        shared = self._shared
        if shared is not None:
            shared.close()

    # ------------------------------------------------------------------ recording

    def record_enrichment(
        self,
        result: EnrichmentResult,
        inference_quality: Optional[float] = None,
        *,
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
    ) -> None:
        """Record one enrichment outcome, optionally with its quality score.

        Idempotent per ``result.enrichment_id`` while the id is in the pending table:
        recording the same result again counts nothing twice; if it brings a quality
        score and the enrichment has none yet, the score is added.

        Args:
            result: what the enricher returned (any object with the same attributes).
            inference_quality: a quality score of the answer (higher is better), or an
                object with a ``.score`` (e.g. a LlamaIndex ``EvaluationResult``).
                ``None``/NaN scores are counted as ``invalid_quality_scores``.
            model: the model that answered the request. With a score, the score also
                counts for this model (see :meth:`compare`); without one, the model is
                remembered for the score :meth:`record_quality` brings later.
            input_tokens: the answering call's prompt tokens (for the cost per request).
            output_tokens: its completion tokens.

        Raises:
            TypeError, ValueError: ``model`` is not a non-blank string or a token count
                is not an integer >= 0.
        """
        call = check_call(model, input_tokens, output_tokens)
        score = None if inference_quality is None else coerce_score(inference_quality)
        # read everything first: a malformed result fails here, before any counter moves
        outcome = read_outcome(result)
        with self._lock:
            scored = self._tally.record(outcome, inference_quality is not None, score, call)
        if scored is not None and self.score_observers:
            notify_score(self.score_observers, result.enrichment_id, scored, inference_quality)

    def record_quality(
        self,
        enrichment_id: str,
        score: Any,
        *,
        model: Optional[str] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
    ) -> bool:
        """Attach a (late) quality score to a recorded enrichment.

        Args:
            enrichment_id: ``EnrichmentResult.enrichment_id`` of the scored request.
            score: a number (higher is better), a bool, or an object with ``.score``.
            model: the model that answered: the score also counts for it, per task, in
                ``get_stats()["task_types"][task]["models"]`` and :meth:`compare`.
                Defaults to the model given to :meth:`record_enrichment`, if any.
            input_tokens: the answering call's prompt tokens (feature block included),
                for the cost per request with ``monitor.model_prices``.
            output_tokens: its completion tokens.

        Returns:
            True when the score was attached. False when the id is unknown (never
            recorded, or evicted from the pending table: counted as
            ``unmatched_quality_scores``), already scored (``duplicate_quality_scores``)
            or the score is unusable (``invalid_quality_scores``).

        Raises:
            TypeError, ValueError: ``model`` is not a non-blank string or a token count
                is not an integer >= 0.
        """
        call = check_call(model, input_tokens, output_tokens)
        value = coerce_score(score)
        with self._lock:
            scored = self._tally.record_quality(enrichment_id, value, call)
        if scored is None:
            return False
        if self.score_observers:
            notify_score(self.score_observers, enrichment_id, scored, score)
        return True

    # ------------------------------------------------------------------ holdout

    def holdout_fraction(self, task_type: str) -> float:
        """The configured holdout share of ``task_type`` (``"*"`` applies to all)."""
        return self._holdout.fraction(task_type)

    def is_held_out(self, task_type: str, unit_id: Optional[str]) -> bool:
        """Does this request belong to the control group (deliberately not enriched)?

        Reproducible: a keyed BLAKE2b hash of ``(seed, task_type, unit_id)`` mapped to
        ``[0, 1)`` and compared with the task's holdout fraction, so one user always
        gets the same treatment for a task type. Without a ``unit_id`` the request is
        never held out. Any text is accepted, lone surrogates included.

        Args:
            task_type: the request's task type.
            unit_id: what is randomised, usually the user id.
        """
        return self._holdout.held_out(task_type, unit_id)

    # ------------------------------------------------------------------ decision

    def watch(self, client_or_breaker: Any) -> None:
        """Follow a circuit breaker so that :meth:`should_enrich` agrees with it.

        Args:
            client_or_breaker: a ``GuardedClient`` (anything with ``.breaker.state``), a
                breaker (anything with ``.state``; an enum with value ``"closed"``,
                ``"open"`` or ``"half_open"``, or that string), or ``None`` to stop.

        Raises:
            TypeError: the object has neither ``.breaker`` nor ``.state``.
        """
        target = breaker_of(client_or_breaker)
        with self._lock:
            self._breaker.follow(target)

    def should_enrich(self, task_type: str) -> bool:
        """Should the enricher fetch features for this request? See the class docs.

        Example:
            >>> FeatureMonitor().should_enrich("faq")
            True
        """
        return self.decision(task_type).enrich

    def decision(self, task_type: str) -> Decision:
        """:meth:`should_enrich` with its reason (one of :class:`DecisionReason`)."""
        cfg = self.config
        with self._lock:
            tally = self._tally
            state, closed_again = self._breaker.observe()
            if closed_again:
                tally.gate.breaker_closed()
            decided = breaker_decision(state)
            if decided is None:
                decided = tally.gate.decision(tally.counters, cfg, self._clock)
            if decided is not None:
                return decided
            shared = self._shared
            disabled = None if shared is None else shared.disabled(task_type)
            if disabled is None:
                ts = tally.lookup_task(task_type)
                disabled = ts is not None and quality_disabled(ts, cfg)
            return quality_decision(disabled, self._rng, cfg.exploration_fraction)

    # ------------------------------------------------------------------ reading

    def get_stats(self) -> Dict[str, Any]:
        """Everything the monitor knows, as a JSON-serialisable dict.

        Keys of the specification: ``total_enrichments``, ``successful_enrichments``
        (features reached the prompt), ``avg_features_used`` (over all enrichments),
        ``avg_latency_ms``, ``quality_with_features``, ``quality_without_features``
        (every scored request that got no features, whatever the reason) and
        ``feature_store_availability_pct`` (share of fetch attempts that did not fail;
        requests never sent to the store do not count). Means are ``None`` when there
        is no data.

        Quality, besides: ``quality_held_out`` (the control group alone),
        ``quality_fallback`` (the other requests without features), ``quality_basis``
        (``"held_out"`` once the control group has ``min_samples`` scores, else
        ``"unenriched"``) and ``quality_delta`` (with features minus the basis).

        Also: latency percentiles (``latency_ms``), tokens, staleness drops, fallbacks
        by reason, recent availability, breaker state, pending-table counters and a
        per-task breakdown under ``task_types`` with the same quality keys, the sample
        counts, the always-valid bounds of the gain (``quality_gain_lower_bound`` /
        ``..._upper_bound``, ``None`` until both compared groups have ``min_samples``
        scores) and ``disabled_for_quality``.

        With ``shared_state``, the counts, sums and quality are those of every replica
        (see :meth:`~asahi_features.monitor.shared.SharedState.cluster_stats`), plus
        ``replica_total_enrichments`` and ``shared_state``.
        """
        stats = self._local_stats()
        if self._shared is not None:
            return self._shared.cluster_stats(stats)
        return stats

    def _local_stats(self) -> Dict[str, Any]:
        with self._lock:
            stats = report.stats_locked(self)
        return report.finish_stats(stats, self.config)

    def compare(
        self, task_type: str, *, cheap: str, expensive: str, margin: float = 0.0
    ) -> ModelComparison:
        """Can ``cheap`` with features replace ``expensive`` without them, for this task?

        Compares the scores recorded with ``model=cheap`` on enriched requests with those
        recorded with ``model=expensive`` on requests without features: the difference
        of the means with its always-valid bounds at ``monitor.confidence``, a verdict
        against ``margin``, and, with ``monitor.model_prices`` and token usage recorded
        with the scores, the cost per request of each and the saving per 1,000 requests,
        ``1000 * (cost(expensive without) - cost(cheap with))``. See
        :mod:`asahi_features.monitor.compare`.

        Args:
            task_type: the task type (as recorded).
            cheap: the cheaper model's name.
            expensive: the expensive model's name.
            margin: how much lower (in score units, >= 0) the cheap model's mean may be
                and still count as not worse.

        Returns:
            A :class:`~asahi_features.monitor.compare.ModelComparison` (``str()`` of it is
            the text the CLI prints).

        Raises:
            ValueError: the task has no recorded enrichments, a model has no scores in
                it (the message lists the models that do), both names are the same, or
                the margin is not a finite number >= 0.

        Example:
            >>> from asahi_features.models import EnrichmentResult
            >>> monitor = FeatureMonitor()
            >>> for i in range(4):
            ...     r = EnrichmentResult(original_prompt="Hi", enriched_prompt="Hi",
            ...         features_used=[], feature_tokens_added=0, enrichment_latency_ms=1.0,
            ...         features_available=i % 2 == 0, task_type="faq")
            ...     monitor.record_enrichment(r, 0.8, model="small" if i % 2 == 0 else "big")
            >>> report = monitor.compare("faq", cheap="small", expensive="big")
            >>> report.cheap_quality, report.expensive_quality, report.difference
            (0.8, 0.8, 0.0)
        """
        from .compare import compare_models, task_models

        shared = self._shared
        if shared is not None:  # every replica's scores
            view = shared.view(latency=False)
            return view.compare(task_type, cheap=cheap, expensive=expensive, margin=margin)
        with self._lock:
            models, tokens = task_models(self._tally.tasks, task_type)
        return compare_models(task_type, models, tokens, cheap, expensive, self.config, margin)

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-serialisable snapshot: ``{"schema", "stats", "state"}``.

        ``stats`` is :meth:`get_stats`; ``state`` holds the raw accumulators that
        :meth:`save` writes and :meth:`load` restores (counters, quality means and
        variances, the latency sample, per-model data). ``schema`` is 1, or 2 when some
        task holds per-model data (scores recorded with ``model=``). The pending table
        and the recent-availability window are not persisted: they describe the running
        process.
        """
        with self._lock:
            stats = report.stats_locked(self)
            t = self._tally
            state = persistence.state_of(t.counters, t.quality, t.latency, t.tasks)
        stats = report.finish_stats(stats, self.config)
        return {"schema": persistence.schema_of(state), "stats": stats, "state": state}

    def _restore(self, restored: persistence.Restored) -> None:
        with self._lock:
            self._init_state(restored)
        if self._shared is not None:
            self._shared.invalidate()

    def save(self, path: Union[str, Path, None] = None) -> Path:
        """Write the counters and quality history to a JSON file, atomically.

        The file is written next to its destination and renamed over it, so a crash
        never leaves a half-written file.

        Args:
            path: destination; defaults to ``config.persist_path``.

        Returns:
            The path written.

        Raises:
            ConfigError: no path given and ``monitor.persist_path`` is not set.
            OSError: the file cannot be written.
        """
        target = persistence.persist_target(path, self.config)
        return persistence.write_snapshot(target, self.snapshot())

    def restore(self, path: Union[str, Path, None] = None, *, missing_ok: bool = True) -> bool:
        """Replace this monitor's counters with those saved in ``path``.

        Args:
            path: the file :meth:`save` wrote; defaults to ``config.persist_path``.
            missing_ok: a missing file leaves the monitor empty and returns False
                (a first start); with ``False`` it raises ``FileNotFoundError``.

        The whole file is checked before anything is restored: the schema version, every
        counter (an integer from 0 to 2**63-1, or a finite number for sums), every task
        entry (its groups and reasons add up to its total) and every quality accumulator
        (finite mean, finite non-negative m2). A file that fails any check raises here,
        naming the field, and the monitor is left empty; a monitor that loaded never
        fails later because of what it loaded.

        Returns:
            True when a saved state was loaded.

        Raises:
            ConfigError: the file is not a saved monitor state (the message names the
                offending field and what is allowed there), or no path is known.
        """
        target = persistence.persist_target(path, self.config)
        restored = persistence.read_saved(target, self.config, missing_ok=missing_ok)
        if restored is None:
            return False
        if isinstance(restored, str):
            with self._lock:
                self._init_state()
            raise persistence.not_a_snapshot(target, restored)
        self._restore(restored)
        return True

    @classmethod
    def load(
        cls,
        path: Union[str, Path, None] = None,
        config: Optional[MonitorConfig] = None,
        **kwargs: Any,
    ) -> FeatureMonitor:
        """A monitor restored from :meth:`save`'s file (empty if the file is missing).

        Args:
            path: the saved file; defaults to ``config.persist_path``.
            config: the ``monitor:`` section for the new monitor.
            **kwargs: passed to the constructor (``breaker``, ``clock``, ``rng``).

        Raises:
            ConfigError: the file is not a saved monitor state, or no path is known.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "monitor.json"
            >>> _ = FeatureMonitor().save(path)
            >>> FeatureMonitor.load(path).get_stats()["total_enrichments"]
            0
        """
        monitor = cls(config, **kwargs)
        monitor.restore(path)
        return monitor

    # ------------------------------------------------------------------ Prometheus

    def register_prometheus(self, registry: Any = None) -> Any:
        """Expose the monitor as Prometheus metrics (needs the ``prometheus`` extra).

        Metrics (all prefixed ``asahi_features_``): ``enrichments_total{task_type,
        reason}``, ``feature_tokens_added_total{task_type}``,
        ``stale_features_dropped_total``, ``feature_store_attempts_total``,
        ``feature_store_failures_total``, ``feature_store_availability_ratio{window=
        "overall"|"recent"}``, ``enrichment_latency_seconds`` (summary with 0.5/0.95/0.99
        quantiles), ``quality_mean{task_type,group}``, ``quality_samples_total{task_type,
        group}``, ``enrichment_enabled{task_type}`` (1 unless disabled for quality),
        ``availability_paused``, ``breaker_open``, ``pending_quality``,
        ``pending_evicted_total`` and ``unmatched_quality_scores_total``.

        One monitor per registry: the metric names carry no monitor label, so a second
        registration in the same registry is refused by prometheus-client. With
        ``shared_state``, the numbers are still this replica's own (add replicas up in
        Prometheus); ``enrichment_enabled`` is the shared decision.

        Args:
            registry: a ``prometheus_client.CollectorRegistry`` (default: the global
                ``REGISTRY``).

        Returns:
            The registered collector (pass it to ``registry.unregister`` to remove it).

        Raises:
            ImportError: prometheus-client is not installed.
            ValueError: the registry already holds these metric names.
        """
        from .export import register

        return register(self, registry)

    def register_prometheus_multiprocess(self, interval_seconds: float = 1.0) -> Any:
        """Export to prometheus-client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``):
        one scrape adds up every worker process. See
        :class:`~asahi_features.monitor.export.MultiprocessExporter` for the metrics.

        Args:
            interval_seconds: how often a background thread copies the numbers
                (:meth:`close` copies them one last time).

        Returns:
            The exporter (``.sync()`` copies now).

        Raises:
            ImportError: prometheus-client is not installed.
            RuntimeError: prometheus-client is not in multi-process mode.
        """
        from .export import MultiprocessExporter

        return MultiprocessExporter(self, interval_seconds=interval_seconds)
