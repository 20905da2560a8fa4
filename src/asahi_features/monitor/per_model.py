"""Quality, token usage and cost per task type and model.

A score recorded with ``model=`` (:meth:`FeatureMonitor.record_quality
<asahi_features.monitor.FeatureMonitor.record_quality>` or ``record_enrichment``) counts
for that model as well as for its task: each task keeps, per model and quality group,
the running quality (:class:`~asahi_features.monitor.stats.Welford`) and the token usage
of the scored LLM calls (``input_tokens`` / ``output_tokens``, when given). Per-model
figures are therefore over *scored* requests: a request never scored is in the task's
counters, not in any model's.

Cost per request of a model and group, with the model's ``monitor.model_prices`` entry::

    cost = mean(input_tokens) / 1000 * input_per_1k_tokens
         + mean(output_tokens) / 1000 * output_per_1k_tokens

Feature tokens added per request are the task's (its feature tokens over its enriched
requests): the enricher builds the same block whichever model answers, so they do not
depend on the model. Their cost is ``tokens / 1000 * input_per_1k_tokens``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ..settings import ModelPrice, MonitorConfig
from .counters import FALLBACK, GROUPS, HELD_OUT, WITH, Quality, new_quality
from .quality import TUNING_FACTOR, basis_of, delta
from .sequential import compare_gain
from .stats import StateFieldError, Welford, check_count, check_object, field_path

__all__ = [
    "OTHER_MODEL",
    "LLMCall",
    "ModelStats",
    "Usage",
    "add_models",
    "add_score",
    "check_call",
    "cost_per_request",
    "merge_calls",
    "model_entry",
]

OTHER_MODEL = "__other__"
"""Where the scores of models past ``monitor.max_models`` (per task) are pooled."""


class LLMCall(NamedTuple):
    """The model that answered a request and the call's token usage (when known)."""

    model: Optional[str]
    """``None``: the usage of a call whose model was given earlier (to record_enrichment)."""
    input_tokens: Optional[int]
    output_tokens: Optional[int]


def _check_tokens(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a whole number of tokens >= 0 or None, got {value!r}")
    return value


def check_call(model: Any, input_tokens: Any, output_tokens: Any) -> Optional[LLMCall]:
    """The checked ``model=`` / ``input_tokens=`` / ``output_tokens=`` arguments.

    Returns:
        ``None`` when all three are ``None``. Usage without a model is kept for the model
        given to the same enrichment's other call (ignored when there is none).

    Raises:
        TypeError: ``model`` is not a string.
        ValueError: ``model`` is blank or a token count is not an integer >= 0.
    """
    if model is None:
        if input_tokens is None and output_tokens is None:
            return None
    elif not isinstance(model, str):
        raise TypeError(f"model must be the model's name (a str), got {type(model).__name__}")
    elif not model.strip():
        raise ValueError("model must be a non-empty name, got a blank string")
    return LLMCall(
        model,
        _check_tokens(input_tokens, "input_tokens"),
        _check_tokens(output_tokens, "output_tokens"),
    )


def merge_calls(new: Optional[LLMCall], old: Optional[LLMCall]) -> Optional[LLMCall]:
    """``new``, with the model and usage ``old`` knew where ``new`` has none (a different
    model replaces ``old`` whole)."""
    if new is None or old is None:
        return old if new is None else new
    if new.model is not None and new.model != old.model:
        return new
    return LLMCall(
        old.model,
        old.input_tokens if new.input_tokens is None else new.input_tokens,
        old.output_tokens if new.output_tokens is None else new.output_tokens,
    )


class Usage:
    """Token usage of one model's scored calls in one quality group (counts and sums)."""

    __slots__ = ("input_n", "input_sum", "output_n", "output_sum")

    def __init__(
        self, input_n: int = 0, input_sum: int = 0, output_n: int = 0, output_sum: int = 0
    ) -> None:
        self.input_n = input_n
        self.input_sum = input_sum
        self.output_n = output_n
        self.output_sum = output_sum

    def to_list(self) -> List[int]:
        """``[input_n, input_sum, output_n, output_sum]`` (the saved form)."""
        return [self.input_n, self.input_sum, self.output_n, self.output_sum]

    @classmethod
    def merged(cls, a: Usage, b: Usage) -> Usage:
        """Both groups' usage together."""
        return cls(
            a.input_n + b.input_n,
            a.input_sum + b.input_sum,
            a.output_n + b.output_n,
            a.output_sum + b.output_sum,
        )

    def means(self) -> Tuple[Optional[float], Optional[float]]:
        """(mean input tokens, mean output tokens); ``None`` where nothing was reported."""
        return (
            self.input_sum / self.input_n if self.input_n else None,
            self.output_sum / self.output_n if self.output_n else None,
        )


class ModelStats:
    """One model's scores and usage within one task (mutated under the monitor's lock)."""

    __slots__ = ("quality", "usage")

    def __init__(self) -> None:
        self.quality: Quality = new_quality()
        self.usage: Tuple[Usage, Usage, Usage] = (Usage(), Usage(), Usage())

    def copy(self) -> ModelStats:
        """An independent copy (to compute a report outside the lock)."""
        other = ModelStats()
        other.quality = tuple(  # type: ignore[assignment]
            Welford(q.n, q.mean, q.m2) for q in self.quality
        )
        other.usage = tuple(Usage(*u.to_list()) for u in self.usage)  # type: ignore[assignment]
        return other

    def without_features(self) -> Tuple[Welford, Usage]:
        """Quality and usage of every scored request without features (held out and
        fallback together)."""
        return (
            Welford.merged(self.quality[HELD_OUT], self.quality[FALLBACK]),
            Usage.merged(self.usage[HELD_OUT], self.usage[FALLBACK]),
        )

    def to_dict(self) -> Dict[str, Any]:
        """The saved form: ``{"quality": [3 accumulators], "usage": [3 x 4 counts]}``."""
        return {
            "quality": [acc.to_dict() for acc in self.quality],
            "usage": [u.to_list() for u in self.usage],
        }

    @classmethod
    def from_dict(cls, value: Any, path: str) -> ModelStats:
        """Rebuild :meth:`to_dict` output, checking every field.

        Raises:
            StateFieldError: a field is missing or out of range (``path`` names it).
        """
        data = check_object(value, path)
        stats = cls()
        quality = data.get("quality")
        if not isinstance(quality, list) or len(quality) != len(GROUPS):
            raise StateFieldError(
                f"{path}.quality",
                f"a list of {len(GROUPS)} accumulators ({', '.join(GROUPS)})",
                quality,
                missing="quality" not in data,
            )
        stats.quality = tuple(  # type: ignore[assignment]
            Welford.from_dict(q, f"{path}.quality[{i}]") for i, q in enumerate(quality)
        )
        usage = data.get("usage")
        if not isinstance(usage, list) or len(usage) != len(GROUPS):
            raise StateFieldError(
                f"{path}.usage",
                f"a list of {len(GROUPS)} lists [input_n, input_sum, output_n, output_sum]",
                usage,
                missing="usage" not in data,
            )
        groups = []
        for i, raw in enumerate(usage):
            where = f"{path}.usage[{i}]"
            if not isinstance(raw, list) or len(raw) != 4:
                raise StateFieldError(
                    where, "a list of 4 counts [input_n, input_sum, output_n, output_sum]", raw
                )
            counts = [check_count(v, f"{where}[{j}]") for j, v in enumerate(raw)]
            scored = stats.quality[i].n
            for j, name in ((0, "input_n"), (2, "output_n")):
                if counts[j] > scored:  # usage is only recorded with a score
                    raise StateFieldError(
                        f"{where}[{j}]", f"{name} at most quality[{i}].n ({scored})", counts[j]
                    )
            groups.append(Usage(*counts))
        stats.usage = tuple(groups)  # type: ignore[assignment]
        return stats


def name_list(names: Any, limit: int = 20) -> str:
    """``'a', 'b', ...`` sorted, at most ``limit`` names (then how many more); ``none``."""
    ordered = sorted(names)
    shown = ", ".join(repr(n) for n in ordered[:limit]) or "none"
    more = len(ordered) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def add_score(
    models: Dict[str, ModelStats], call: LLMCall, group: int, score: float, max_models: int
) -> None:
    """Count one score (and its call's usage) for ``call.model`` (nothing without one)."""
    model = call.model
    if model is None:
        return
    stats = models.get(model)
    if stats is None:
        name = model if len(models) < max_models else OTHER_MODEL
        stats = models.get(name)
        if stats is None:
            stats = models[name] = ModelStats()
    stats.quality[group].add(score)
    usage = stats.usage[group]
    if call.input_tokens is not None:
        usage.input_n += 1
        usage.input_sum += call.input_tokens
    if call.output_tokens is not None:
        usage.output_n += 1
        usage.output_sum += call.output_tokens


def add_models(
    into: Dict[str, ModelStats], models: Mapping[str, ModelStats], max_models: int
) -> None:
    """Add another replica's per-model scores and usage to ``into`` (``models`` is not
    changed). A model new to ``into`` past ``max_models`` is pooled under
    :data:`OTHER_MODEL`, as when recording."""
    for model, stats in models.items():
        target = into.get(model)
        if target is None:
            name = model if len(into) < max_models else OTHER_MODEL
            target = into.get(name)
            if target is None:
                target = into[name] = ModelStats()
        target.quality = tuple(  # type: ignore[assignment]
            Welford.merged(a, b) for a, b in zip(target.quality, stats.quality, strict=True)
        )
        target.usage = tuple(  # type: ignore[assignment]
            Usage.merged(a, b) for a, b in zip(target.usage, stats.usage, strict=True)
        )


def read_models(value: Any, path: str, task_quality: Quality) -> Dict[str, ModelStats]:
    """The checked ``models`` object of a saved task: each model's scores per group add
    up to at most the task's.

    Raises:
        StateFieldError: a field is missing or out of range (``path`` names it).
    """
    raw = check_object(value, path)
    models = {
        name: ModelStats.from_dict(data, field_path(path, name)) for name, data in raw.items()
    }
    for group, acc in enumerate(task_quality):
        scored = sum(m.quality[group].n for m in models.values())
        if scored > acc.n:
            raise StateFieldError(
                path, f"per-model scores of group {group} adding up to at most {acc.n}", scored
            )
    return models


def cost_per_request(usage: Usage, price: Optional[ModelPrice]) -> Optional[float]:
    """Mean cost of one call (see the module docs); ``None`` without a price or without
    both input and output usage."""
    mean_in, mean_out = usage.means()
    if price is None or mean_in is None or mean_out is None:
        return None
    return (
        mean_in / 1000.0 * price.input_per_1k_tokens
        + mean_out / 1000.0 * price.output_per_1k_tokens
    )


def gain_bounds_of(
    with_q: Welford, basis: Welford, cfg: MonitorConfig
) -> Tuple[Optional[float], Optional[float]]:
    """Always-valid (lower, upper) bounds of ``mean(with) - mean(basis)`` at
    ``cfg.confidence`` (as the task's decision uses), once both have ``min_samples``."""
    if with_q.n < cfg.min_samples or basis.n < cfg.min_samples:
        return None, None
    evidence = compare_gain(
        with_q,
        basis,
        margin=0.0,
        alpha=1.0 - cfg.confidence,
        tuning_samples=TUNING_FACTOR * cfg.min_samples,
    )
    return (None, None) if evidence is None else evidence.bounds()


def model_entry(
    name: str, stats: ModelStats, tokens_added: Optional[float], cfg: MonitorConfig
) -> Dict[str, Any]:
    """The ``task_types[task]["models"][name]`` entry of ``get_stats()``."""
    without, usage_without = stats.without_features()
    basis, basis_acc = basis_of(stats.quality, cfg.min_samples)
    lower, upper = gain_bounds_of(stats.quality[WITH], basis_acc, cfg)
    q = [acc.summary() for acc in stats.quality]
    price = cfg.model_prices.get(name)
    usage_with = stats.usage[WITH]
    in_with, out_with = usage_with.means()
    in_without, out_without = usage_without.means()
    return {
        "quality": dict(zip(GROUPS, q, strict=True)),
        "quality_with_features": q[WITH]["mean"],
        "quality_without_features": without.mean if without.n else None,
        "quality_basis": basis,
        "quality_delta": delta(stats.quality[WITH], basis_acc),
        "quality_gain_lower_bound": lower,
        "quality_gain_upper_bound": upper,
        "scored": {"with_features": q[WITH]["n"], "without_features": without.n},
        "feature_tokens_added_per_request": tokens_added,
        "input_tokens_per_request": {"with_features": in_with, "without_features": in_without},
        "output_tokens_per_request": {
            "with_features": out_with,
            "without_features": out_without,
        },
        "price": None if price is None else price.model_dump(),
        "cost_per_request": {
            "with_features": cost_per_request(usage_with, price),
            "without_features": cost_per_request(usage_without, price),
        },
        "feature_cost_per_request": (
            None
            if price is None or tokens_added is None
            else tokens_added / 1000.0 * price.input_per_1k_tokens
        ),
    }
