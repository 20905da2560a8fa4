"""Can the cheaper model with features replace the expensive one without them?

:func:`compare_models` builds the typed :class:`ModelComparison` that
:meth:`FeatureMonitor.compare <asahi_features.monitor.FeatureMonitor.compare>` returns
and ``asahi-features stats --compare`` prints.

* **Quality.** ``difference = mean(cheap, with features) - mean(expensive, without
  features)``. "Without features" is the expensive model's *basis*, chosen as for the
  task's decision: its held-out scores once they number ``min_samples`` (the fair,
  randomised control group), else every scored request of it that got no features
  (``expensive_basis`` says which; its cost uses the same requests). Its bounds are
  the always-valid bounds of :mod:`asahi_features.monitor.sequential` at
  ``monitor.confidence`` (each one-sided), so the report may be read as often as one
  likes. The cheap model *is not worse* (``cheap_not_worse``) when the lower bound is at
  least ``-margin``, *is worse* when the upper bound is below ``-margin``, and the
  answer is ``None`` while the bounds straddle it.
* **Cost.** For each side, the cost per request of :mod:`asahi_features.monitor.per_model`
  (mean input and output tokens of its scored calls times the model's
  ``monitor.model_prices``)::

      saving per 1,000 requests = 1000 * (cost(expensive, without features)
                                           - cost(cheap, with features))

  The cheap side's input tokens include the feature tokens it was sent. Positive: the
  cheap model with features costs less.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..settings import MonitorConfig
from .counters import BASIS_HELD_OUT, HELD_OUT, WITH, TaskStats
from .per_model import ModelStats, cost_per_request, name_list
from .quality import TUNING_FACTOR, basis_of
from .report import tokens_per_enriched
from .sequential import compare_gain

__all__ = ["ModelComparison", "compare_models", "format_comparison", "task_models"]


@dataclass(frozen=True)
class ModelComparison:
    """The cheap model with features against the expensive model without, for one task.

    Costs are in the currency of ``monitor.model_prices``; ``None`` where the report
    cannot say (``notes`` tells why).
    """

    task: str
    """The task type compared."""
    cheap: str
    """The cheaper model (its scored requests *with* features)."""
    expensive: str
    """The expensive model (its scored requests *without* features)."""
    cheap_quality: Optional[float]
    """Mean score of the cheap model with features."""
    cheap_samples: int
    """How many scores that mean is over."""
    expensive_quality: Optional[float]
    """Mean score of the expensive model without features."""
    expensive_samples: int
    """How many scores that mean is over."""
    expensive_basis: str
    """``"held_out"`` (the control group, once it has ``min_samples`` scores) or
    ``"unenriched"`` (every scored request without features)."""
    difference: Optional[float]
    """``cheap_quality - expensive_quality``."""
    lower_bound: Optional[float]
    """Always-valid lower bound of the difference (``None``: too few or constant scores)."""
    upper_bound: Optional[float]
    """Always-valid upper bound of the difference."""
    confidence: float
    """Confidence of each one-sided bound (``monitor.confidence``)."""
    margin: float
    """How much worse (in score units) the cheap model may be and still "not be worse"."""
    cheap_not_worse: Optional[bool]
    """True: lower bound >= -margin; False: upper bound < -margin; None: undecided."""
    feature_tokens_added: Optional[float]
    """Feature tokens per enriched request of the task."""
    cheap_cost_per_request: Optional[float]
    """Cost of one cheap call with features."""
    expensive_cost_per_request: Optional[float]
    """Cost of one expensive call without features."""
    saving_per_1000_requests: Optional[float]
    """``1000 * (expensive_cost_per_request - cheap_cost_per_request)``."""
    notes: Tuple[str, ...] = ()
    """Why a figure is ``None`` (missing prices, usage or scores)."""

    def to_dict(self) -> Dict[str, Any]:
        """The report as a JSON-serialisable dict."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    def __str__(self) -> str:
        return format_comparison(self)


def task_models(
    tasks: Dict[str, TaskStats], task: str
) -> Tuple[Dict[str, ModelStats], Optional[float]]:
    """Copies of ``task``'s per-model data and its feature tokens per enriched request,
    for :func:`compare_models` (call with the monitor's lock held).

    Raises:
        ValueError: no enrichments were recorded for ``task`` (the message lists the
            task types that have some).
    """
    ts = tasks.get(task)
    if ts is None:
        known = name_list(tasks)
        raise ValueError(f"no enrichments recorded for task {task!r} (task types: {known})")
    models = {name: stats.copy() for name, stats in ts.models.items()}
    return models, tokens_per_enriched(ts)


def compare_models(
    task: str,
    models: Dict[str, ModelStats],
    tokens_added: Optional[float],
    cheap: str,
    expensive: str,
    cfg: MonitorConfig,
    margin: float = 0.0,
) -> ModelComparison:
    """The comparison of ``cheap`` with features and ``expensive`` without in ``task``.

    Args:
        task: the task type (for the report).
        models: the task's per-model data (copies: this runs outside the lock).
        tokens_added: the task's feature tokens per enriched request.
        cheap: the cheaper model's name.
        expensive: the expensive model's name.
        cfg: the monitor's settings (confidence, min_samples, model_prices).
        margin: see :attr:`ModelComparison.margin` (a finite number >= 0).

    Raises:
        ValueError: a model has no scores in the task (the message lists those that do),
            the two names are the same, or the margin is not a finite number >= 0.
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0 (score units), got {margin!r}")
    if cheap == expensive:
        raise ValueError(f"cheap and expensive must be two different models, got {cheap!r} twice")
    for role, name in (("cheap", cheap), ("expensive", expensive)):
        if name not in models:
            known = name_list(models)
            raise ValueError(
                f"{role} model {name!r} has no scores recorded for task {task!r} "
                f"(models with scores: {known}; scores count for a model when recorded "
                "with model=...)"
            )
    notes: List[str] = []
    cheap_q = models[cheap].quality[WITH]
    cheap_usage = models[cheap].usage[WITH]
    expensive_stats = models[expensive]
    basis, expensive_q = basis_of(expensive_stats.quality, cfg.min_samples)
    if basis == BASIS_HELD_OUT:
        expensive_usage = expensive_stats.usage[HELD_OUT]
    else:
        expensive_usage = expensive_stats.without_features()[1]
    difference = cheap_q.mean - expensive_q.mean if cheap_q.n and expensive_q.n else None
    lower = upper = None
    if cheap_q.n < cfg.min_samples or expensive_q.n < cfg.min_samples:
        notes.append(
            f"no bounds yet: {cheap_q.n} scores of {cheap!r} with features and "
            f"{expensive_q.n} of {expensive!r} without; each needs monitor.min_samples "
            f"({cfg.min_samples})"
        )
    else:
        evidence = compare_gain(
            cheap_q,
            expensive_q,
            margin=-margin,
            alpha=1.0 - cfg.confidence,
            tuning_samples=TUNING_FACTOR * cfg.min_samples,
        )
        if evidence is None:
            notes.append("no bounds: a group's scores are all equal (its variance is unknown)")
        else:
            lower, upper = evidence.bounds()
    verdict = None
    if lower is not None and upper is not None:
        verdict = True if lower >= -margin else False if upper < -margin else None
    costs: List[Optional[float]] = []
    for name, usage, group in (
        (cheap, cheap_usage, "with features"),
        (expensive, expensive_usage, "without features"),
    ):
        price = cfg.model_prices.get(name)
        cost = cost_per_request(usage, price)
        if price is None:
            notes.append(f"no price for {name!r}: add it to monitor.model_prices")
        elif cost is None:
            notes.append(
                f"no token usage for {name!r} {group}: record scores with "
                "input_tokens=... and output_tokens=..."
            )
        costs.append(cost)
    cheap_cost, expensive_cost = costs
    saving = (
        1000.0 * (expensive_cost - cheap_cost)
        if cheap_cost is not None and expensive_cost is not None
        else None
    )
    return ModelComparison(
        task=task,
        cheap=cheap,
        expensive=expensive,
        cheap_quality=cheap_q.mean if cheap_q.n else None,
        cheap_samples=cheap_q.n,
        expensive_quality=expensive_q.mean if expensive_q.n else None,
        expensive_samples=expensive_q.n,
        expensive_basis=basis,
        difference=difference,
        lower_bound=lower,
        upper_bound=upper,
        confidence=cfg.confidence,
        margin=float(margin),
        cheap_not_worse=verdict,
        feature_tokens_added=tokens_added,
        cheap_cost_per_request=cheap_cost,
        expensive_cost_per_request=expensive_cost,
        saving_per_1000_requests=saving,
        notes=tuple(notes),
    )


def _num(value: Optional[float], digits: int = 4) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}"


def format_comparison(c: ModelComparison) -> str:
    """The report as a few lines of text (what the CLI prints)."""
    if c.cheap_not_worse is None:
        verdict = "undecided (the bounds include the margin)"
        if c.lower_bound is None:
            verdict = "undecided (not enough scores)"
    elif c.cheap_not_worse:
        verdict = f"{c.cheap} with features is NOT worse than {c.expensive} without"
    else:
        verdict = f"{c.cheap} with features IS worse than {c.expensive} without"
    lines = [
        f"task {c.task!r}: {c.cheap} with features vs {c.expensive} without",
        f"  quality {c.cheap} with features:    {_num(c.cheap_quality)} (n={c.cheap_samples})",
        f"  quality {c.expensive} without features: "
        f"{_num(c.expensive_quality)} (n={c.expensive_samples}, basis {c.expensive_basis})",
        f"  difference: {_num(c.difference)}, always-valid bounds at confidence "
        f"{c.confidence:g}: [{_num(c.lower_bound)}, {_num(c.upper_bound)}]",
        f"  verdict (margin {c.margin:g}): {verdict}",
        f"  feature tokens added per request: {_num(c.feature_tokens_added, 1)}",
        f"  cost per request: {c.cheap} with features {_num(c.cheap_cost_per_request, 6)}, "
        f"{c.expensive} without {_num(c.expensive_cost_per_request, 6)}",
        f"  saving per 1,000 requests: {_num(c.saving_per_1000_requests, 4)}",
    ]
    lines.extend(f"  note: {note}" for note in c.notes)
    return "\n".join(lines)
