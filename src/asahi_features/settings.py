"""Pydantic models of the YAML configuration (spec section 2.4 plus enricher and monitor).

One module on purpose (about 530 lines): every section of the YAML file is one small
model here, in file order, so that the generated configuration reference and the error
messages follow the file; the models hold no logic beyond validation.

Every model forbids unknown keys so that a typo is an error naming the key, not a
silently ignored setting. Relative paths resolve against the configuration file's
directory (see :func:`asahi_features.config.load_config`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_FEATURE_LABELS",
    "DEFAULT_TASK_FEATURES",
    "PROVIDERS",
    "AsahiConfig",
    "CustomSettings",
    "EnricherConfig",
    "FeastSettings",
    "FeaturePolicy",
    "FeatureStoreSettings",
    "HttpSettings",
    "LocalSettings",
    "ModelPrice",
    "MonitorConfig",
    "TectonSettings",
    "TelemetryConfig",
    "env_name_problem",
    "nested_model",
]

Provider = Literal["feast", "tecton", "http", "custom", "local"]
PROVIDERS: tuple[str, ...] = ("feast", "tecton", "http", "custom", "local")


def nested_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The settings model a field holds (``Optional[X]`` included), or ``None``."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def env_name_problem(value: object, what: str) -> Optional[str]:
    """Why ``value`` cannot be the name of an environment variable (``None`` if it can).

    A value that is not a plausible name (letters, digits and underscores, not starting
    with a digit) is most likely a key pasted where its variable's name belongs: the
    message never contains it.
    """
    if isinstance(value, str) and _ENV_NAME.fullmatch(value):
        return None
    return (
        f"{what} must be the NAME of an environment variable (letters, digits and "
        f"underscores, not starting with a digit), such as TECTON_API_KEY, never the "
        f"secret itself; the value given is not shown"
    )


class _Strict(BaseModel):
    # hide_input_in_errors: a pydantic ValidationError never quotes what it rejected
    # (a key pasted into api_key_env must not reach logs through str(error))
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        use_attribute_docstrings=True,
        hide_input_in_errors=True,
    )


class FeastSettings(_Strict):
    """``feature_store.feast``: an embedded Feast repository."""

    repo_path: ConfigPath
    """Directory holding ``feature_store.yaml`` (relative to the config file)."""
    project: str = "asahi"
    """Feast project name."""
    entity_join_keys: Dict[str, str] = Field(default_factory=dict)
    """Entity type -> join key, overriding what the registry says."""
    registry_ttl_seconds: Optional[float] = Field(default=None, ge=0)
    """How often the registry is re-read (``None``: Feast's own setting)."""


class TectonSettings(_Strict):
    """``feature_store.tecton``: a Tecton feature service over the real tecton-client."""

    api_key_env: str = "TECTON_API_KEY"
    """Name of the environment variable holding the key (never the key itself)."""
    workspace: str = "production"
    """Tecton workspace."""
    url: Optional[str] = None
    """Cluster URL, e.g. ``https://yourco.tecton.ai``."""
    feature_service: Optional[str] = None
    """Feature service serving every entity type (see ``feature_services``)."""
    feature_services: Dict[str, str] = Field(default_factory=dict)
    """Entity type -> feature service, overriding ``feature_service`` for that type."""
    entity_join_keys: Dict[str, str] = Field(default_factory=dict)
    """Entity type -> join key (default: the service's only join key, else ``<type>_id``)."""
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    """Concurrent requests of one batch (Tecton serves one entity per request)."""

    @field_validator("api_key_env", mode="after")
    @classmethod
    def _api_key_env_is_a_name(cls, value: str) -> str:
        problem = env_name_problem(value, "api_key_env")
        if problem:
            raise ValueError(problem)
        return value


class HttpSettings(_Strict):
    """``feature_store.http``: a Feast feature server (``feast serve``)."""

    url: str
    """Base URL of the feature server, e.g. ``http://features.internal:6566``."""
    project: str = "asahi"
    """Feast project served by the feature server."""
    entity_join_keys: Dict[str, str] = Field(default_factory=dict)
    """Entity type -> join key (default: ``<entity type>_id``)."""
    feature_views: Dict[str, List[str]] = Field(default_factory=dict)
    """Entity type -> feature references (``view:feature``) it serves, for plain names."""
    request_data: Dict[str, List[str]] = Field(default_factory=dict)
    """Entity type -> request-context fields sent with its reads (inputs of on-demand
    views with request sources)."""
    headers_env: Dict[str, str] = Field(default_factory=dict)
    """HTTP header -> name of the environment variable that holds its value."""
    max_connections: int = Field(default=32, ge=1)
    """Size of the pooled HTTP connection pool."""
    verify: bool = True
    """Check the server's TLS certificate (``false`` only on a trusted network or in tests)."""
    ca_bundle: Optional[ConfigPath] = None
    """PEM file of the CA certificates the server's certificate must chain to (relative
    to the config file; default: the usual public CAs)."""
    client_cert: Optional[ConfigPath] = None
    """PEM client certificate, for a server that requires one (mutual TLS)."""
    client_key: Optional[ConfigPath] = None
    """PEM private key of ``client_cert`` (unencrypted), when not in the same file."""
    token_env: Optional[str] = None
    """Name of the environment variable holding a bearer token (read on every request)."""
    token_file: Optional[ConfigPath] = None
    """File holding a bearer token, re-read whenever it changes (a mounted secret)."""
    token_provider: Optional[str] = Field(default=None, pattern=r"^[\w.]+:[\w.]+$")
    """``package.module:function`` returning a bearer token; called on first use and
    again after the server answers 401."""
    json_features: List[str] = Field(default_factory=list)
    """References (``view:feature``) of ``Json`` features, parsed as the embedded Feast
    backend parses them (the server sends their JSON text and does not say which are Json)."""

    @field_validator("token_env", mode="after")
    @classmethod
    def _token_env_is_a_name(cls, value: Optional[str]) -> Optional[str]:
        problem = env_name_problem(value, "token_env") if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _tls_and_token_fit(self) -> HttpSettings:
        sources = [
            name
            for name in ("token_env", "token_file", "token_provider")
            if getattr(self, name) is not None
        ]
        if len(sources) > 1:
            raise ValueError(f"give at most one bearer token source; got {' and '.join(sources)}")
        if sources and any(h.lower() == "authorization" for h in self.headers_env):
            raise ValueError(
                f"{sources[0]} and an Authorization header in headers_env both set the "
                f"credentials; keep one"
            )
        tls = [
            name
            for name in ("ca_bundle", "client_cert", "client_key")
            if getattr(self, name) is not None
        ] + ([] if self.verify else ["verify: false"])
        if tls and not self.url.startswith("https://"):
            raise ValueError(f"{', '.join(tls)} configure TLS, which needs an https:// url")
        if not self.verify and self.ca_bundle is not None:
            raise ValueError("verify is false but ca_bundle is set; remove one of them")
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key is set without client_cert")
        return self

    @field_validator("headers_env", mode="after")
    @classmethod
    def _headers_env_names(cls, value: Dict[str, str]) -> Dict[str, str]:
        for header, env in value.items():
            if not _HEADER_NAME.fullmatch(header):
                raise ValueError(
                    "an HTTP header name may hold only letters, digits and "
                    "!#$%&'*+-.^_`|~ (the name given is not shown)"
                )
            problem = env_name_problem(env, f"the value for header {header!r}")
            if problem:
                raise ValueError(problem)
        return value


class CustomSettings(_Strict):
    """``feature_store.custom``: any class implementing the FeatureStoreClient protocol."""

    class_path: str = Field(alias="class", pattern=r"^[\w.]+:[\w.]+$")
    """``package.module:ClassName``."""
    options: Dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the class."""


class LocalSettings(_Strict):
    """``feature_store.local``: a JSON file, for development and tests."""

    data_path: ConfigPath
    """The JSON feature file (relative to the config file)."""


class FeatureStoreSettings(_Strict):
    """``feature_store``: which backend, and how the guard protects callers from it."""

    provider: Provider
    """Backend: ``feast``, ``tecton``, ``http``, ``custom`` or ``local``."""
    feast: Optional[FeastSettings] = None
    tecton: Optional[TectonSettings] = None
    http: Optional[HttpSettings] = None
    custom: Optional[CustomSettings] = None
    local: Optional[LocalSettings] = None

    timeout_ms: float = Field(default=200, gt=0, le=600_000)
    """The deadline of one request: every feature fetch it makes (user, organization,
    ...) runs concurrently inside it."""
    batch_timeout_ms: Optional[float] = Field(default=None, gt=0, le=600_000)
    """A fixed deadline for requests of more than one entity id (unset: timeout_ms plus
    batch_entity_timeout_ms for each id past the first)."""
    batch_entity_timeout_ms: float = Field(default=1.0, ge=0, le=60_000)
    """What each entity id past the first adds to a request's deadline (1,000 ids: +1 s)."""
    fallback_on_timeout: bool = True
    """Proceed without features when the store is slow or down (else raise)."""
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Share of failed backend reads in the breaker's window that opens it."""
    breaker_slow_call_rate: float = Field(default=1.0, gt=0, le=1)
    """Share of slow backend reads (longer than their deadline) that opens it."""
    breaker_window: int = Field(default=20, ge=1, le=10_000)
    """How many of the most recent backend reads the breaker judges."""
    breaker_minimum_calls: int = Field(default=5, ge=1, le=10_000)
    """Reads needed in the window before the breaker judges at all (at most breaker_window)."""
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    """How long the breaker stays open before probe reads are let through."""
    breaker_half_open_calls: int = Field(default=2, ge=1, le=1_000)
    """Probe reads let through when half-open; they decide whether it closes."""
    max_workers: int = Field(default=8, ge=1, le=1024)
    """Worker threads the guard may use (and at most this many can hang)."""
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    """The most entity ids one coalesced backend read carries."""
    cache_ttl_seconds: float = Field(default=0.0, ge=0)
    """Keep fetched vectors this long (0 = no cache)."""
    cache_max_entries: int = Field(default=10_000, ge=1)
    """Most vectors the cache holds (least recently used evicted first)."""
    warning_interval_seconds: float = Field(default=60.0, ge=0)
    """At most one fallback WARNING per this interval; the rest are counted."""

    @model_validator(mode="after")
    def _breaker_window_holds_minimum(self) -> FeatureStoreSettings:
        if self.breaker_minimum_calls > self.breaker_window:
            raise ValueError(
                f"breaker_minimum_calls ({self.breaker_minimum_calls}) must be at most "
                f"breaker_window ({self.breaker_window})"
            )
        return self

    @model_validator(mode="after")
    def _provider_section_present(self) -> FeatureStoreSettings:
        if getattr(self, self.provider) is None:
            raise ValueError(
                f"provider is {self.provider!r} but the '{self.provider}:' section is missing"
            )
        return self


DEFAULT_TASK_FEATURES: Dict[str, Dict[str, List[str]]] = {
    # general, summarization and faq are not in spec table 3.5, but the spec's default
    # enabled_task_types names them, so they need a mapping: a minimal one, built only
    # from features the table already asks a repository for.
    "general": {"user": ["tier", "preferences"]},
    "summarization": {"user": ["preferences"]},
    "faq": {"user": ["tier", "product_owned"]},
    # spec table 3.5, exactly. Every default feature is one the user's store must serve
    # (build_enricher checks the enabled tasks); richer maps belong in the user's config,
    # see examples/config.yaml and asahi_features.sample_repo.SAMPLE_TASK_FEATURES.
    "product_recommendation": {"user": ["purchase_history", "browsing", "preferences"]},
    "customer_support": {"user": ["tier", "recent_tickets", "product_owned"]},
    "content_generation": {"organization": ["brand_voice", "tone", "style_guide"]},
    "code_generation": {"user": ["language_preferences", "framework_history"]},
}

DEFAULT_FEATURE_LABELS: Dict[str, str] = {
    "purchase_history": "Recent activity",
    "browsing": "Browsing",
    "preferences": "Preference",
    "budget_level": "Budget",
    "demographics": "Demographics",
    "tier": "Customer tier",
    "recent_tickets": "Recent tickets",
    "product_owned": "Products owned",
    "language_preferences": "Preferred languages",
    "framework_history": "Frameworks used",
    "brand_voice": "Brand voice",
    "tone": "Tone",
    "style_guide": "Style guide",
    "reading_level": "Reading level",
    "preferred_language": "Language",
}
"""Display labels of well-known feature names: the default task map's, plus those a
richer map commonly adds (spec 3.4 renders ``budget_level`` as "Budget"). A label never
makes a feature be fetched; names without one are humanised."""


class FeaturePolicy(_Strict):
    """Which features may reach a prompt (keep PII out).

    ``allow`` (when non-empty) admits only the listed features; ``deny`` removes features;
    ``redact`` keeps the line but replaces the value with ``redaction_text``. Names are
    plain feature names (``email``) or full references (``user_profile:email``).
    """

    allow: List[str] = Field(default_factory=list)
    """When non-empty, only these features may reach a prompt."""
    deny: List[str] = Field(default_factory=list)
    """These features never reach a prompt."""
    redact: List[str] = Field(default_factory=list)
    """These features are shown with ``redaction_text`` instead of their value."""
    redaction_text: str = "[redacted]"
    """What a redacted value is replaced with."""


class EnricherConfig(_Strict):
    """How the enricher chooses, renders and budgets features (spec section 3.3)."""

    max_feature_tokens: int = Field(default=200, ge=0)
    """Max tokens to add from features."""
    freshness_threshold_seconds: int = Field(default=3600, ge=0)
    """Reject features older than this (a Feast view's ``ttl``, when shorter, is the
    limit of its features)."""
    freshness_overrides: Dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Feature name (plain or ``view:feature``) -> its own freshness limit in seconds,
    used instead of the threshold and the view's ``ttl``."""
    stale_note: bool = False
    """Also say in each entity block which features were left out as stale and why
    (``- Left out as stale: Conv rate (age 108000 s > limit 86400 s (view ttl))``), so
    the model knows the value exists but is out of date; ``stale_reasons`` of the
    result always says it."""
    unknown_age: Literal["drop", "keep"] = "drop"
    """Features of unknown age (no, an unparsable, an epoch or a far-future timestamp):
    ``drop`` treats them as stale, ``keep`` lets them pass the freshness check."""
    enabled_task_types: List[str] = Field(
        default_factory=lambda: ["general", "summarization", "faq"]
    )
    """Tasks that benefit from enrichment."""
    task_features: Dict[str, Dict[str, List[str]]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TASK_FEATURES.items()}
    )
    """Task type -> entity type -> feature names, in priority order."""
    task_feature_services: Dict[str, str] = Field(default_factory=dict)
    """Task type -> the Feast ``FeatureService`` whose features it uses (checked against
    the registry when the enricher is built; its entity type comes from the registry)."""
    feature_labels: Dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FEATURE_LABELS))
    """Feature name -> label shown in the prompt (default: the name, humanised)."""
    policy: FeaturePolicy = Field(default_factory=FeaturePolicy)
    encoding: str = "cl100k_base"
    """tiktoken encoding used to count ``feature_tokens_added``."""
    max_value_chars: int = Field(default=500, ge=8)
    """A single rendered value longer than this is cut (at a word boundary)."""
    max_list_items: int = Field(default=10, ge=1)
    """At most this many (most recent) list items are rendered."""


class ModelPrice(_Strict):
    """The price of one model's tokens (in any one currency, used for every model)."""

    input_per_1k_tokens: float = Field(ge=0, allow_inf_nan=False)
    """Price of 1,000 prompt (input) tokens."""
    output_per_1k_tokens: float = Field(ge=0, allow_inf_nan=False)
    """Price of 1,000 completion (output) tokens."""


def _model_names(prices: Dict[str, ModelPrice]) -> Dict[str, ModelPrice]:
    for name in prices:
        if not name.strip():
            raise ValueError("a model name in model_prices must not be empty or blank")
    return prices


class SharedStateConfig(_Strict):
    """``monitor.shared_state``: one monitor view shared by every replica (Redis).

    Each replica keeps counting in process (recording never waits for the network) and a
    background thread writes its cumulative state to Redis and reads everyone's, so
    that ``get_stats()`` and the quality decision cover all replicas.
    """

    backend: Literal["redis"] = "redis"
    """Where the shared state lives (only ``redis`` for now)."""
    url: Optional[str] = None
    """Redis URL, e.g. ``redis://redis.internal:6379/0`` (or use ``url_env``)."""
    url_env: str = "ASAHI_MONITOR_REDIS_URL"
    """Name of the environment variable holding the URL, read when ``url`` is not set
    (a URL with a password belongs there, not in the file)."""
    key_prefix: str = Field(default="asahi_features:monitor", min_length=1)
    """Prefix of every Redis key; replicas with the same prefix share one view."""
    flush_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    """How often the background thread writes this replica's counts and re-reads the
    merged view and the shared decision."""
    replica_id: Optional[str] = Field(default=None, min_length=1, max_length=200)
    """This replica's name (default: host, pid and a random suffix). Set a stable one
    (the pod name) together with ``persist_path`` so that a restarted replica continues
    its own counts instead of adding a new replica's."""
    socket_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    """Timeout of every Redis call (each retried once, at once). Creating the monitor
    waits for one first sync, so with Redis unreachable it takes a few of these."""
    retire_after_seconds: Optional[float] = Field(default=86_400.0, gt=0)
    """A replica that has not written for this long (stopped) is folded into one
    ``__retired__`` record: its counts stay, its record goes, so the number of records
    stays bounded (``None``: keep every record). Live replicas write at least every
    quarter of this."""

    @field_validator("url_env", mode="after")
    @classmethod
    def _url_env_is_a_name(cls, value: str) -> str:
        problem = env_name_problem(value, "url_env")
        if problem:
            raise ValueError(problem)
        return value


class MonitorConfig(_Strict):
    """``monitor``: holdout, the should-enrich decision, memory bounds, export."""

    holdout_fraction: Dict[str, float] = Field(default_factory=dict)
    """Task type -> share of requests deliberately not enriched (``"*"``: every task)."""
    min_samples: int = Field(default=30, ge=2)
    """Quality scores needed in each compared group before quality can decide; also the
    held-out group's size from which it, rather than every request without features, is
    the comparison basis. The always-valid bounds are tightest at ten times this many.
    For pass/fail scores, pick it so that the smaller group expects about ten of the
    rarer outcome."""
    min_quality_gain: float = 0.0
    """Enrichment must improve mean quality by more than this margin: it is disabled when
    the always-valid upper bound of the gain falls below it, enabled again when the lower
    bound rises above it."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    """Of the always-valid quality decision: ``1 - confidence`` bounds the chance that it
    is ever wrong (each way), however often it is read."""
    exploration_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    """Share of requests still enriched while quality says no, so the decision can change."""
    availability_window: int = Field(default=200, ge=1)
    """Recent fetch attempts used for the windowed availability."""
    failure_window_min_attempts: int = Field(default=20, ge=1)
    """Attempts in the window before a low availability disables enrichment."""
    min_availability_pct: float = Field(default=50.0, ge=0.0, le=100.0)
    """Below this recent availability, enrichment is paused (together with the breaker)."""
    availability_probe_interval_seconds: float = Field(default=5.0, gt=0)
    """While paused for low availability, one request per interval is let through as a probe."""
    max_task_types: int = Field(default=1000, ge=1)
    """Distinct task types tracked separately (more are pooled under ``"__other__"``)."""
    max_pending_quality: int = Field(default=100_000, ge=1)
    """Enrichments remembered for late quality scores (oldest evicted, eviction counted)."""
    latency_reservoir_size: int = Field(default=4096, ge=16)
    """Latency samples kept for the percentiles (a uniform reservoir)."""
    persist_path: Optional[ConfigPath] = None
    """Where ``save()`` / ``load()`` keep the counters across restarts."""
    seed: int = 0
    """Salt of the hash that assigns users to the holdout (reproducible)."""
    # Annotated: the reference documents this as one key (its rows are per model name)
    model_prices: Annotated[
        Dict[str, Annotated[ModelPrice, Field()]], AfterValidator(_model_names)
    ] = Field(default_factory=dict)
    """Model name -> ``{input_per_1k_tokens, output_per_1k_tokens}`` (numbers >= 0, one
    currency for all): the price of 1,000 prompt and 1,000 completion tokens. With the
    token usage recorded with the scores, the per-model report gives the cost per request
    and ``compare()`` the saving per 1,000 requests."""
    max_models: int = Field(default=100, ge=1)
    """Distinct models tracked per task type (more are pooled under ``"__other__"``)."""
    shared_state: Optional[SharedStateConfig] = None
    """Share counts and the quality decision between replicas (``None``: this process
    only, the default)."""


class TelemetryConfig(_Strict):
    """``telemetry``: OpenTelemetry tracing of enrichments and quality scores."""

    opentelemetry: bool = False
    """A span per enrichment and a `gen_ai.evaluation.result` event per quality score,
    through the global tracer provider (needs the `otel` extra)."""
    record_ids: bool = False
    """Also put the user id (`user.id`) and organisation id (`asahi.organization.id`) on
    spans; off, no id is exported."""
    evaluation_name: str = Field(default="asahi.inference_quality", min_length=1, max_length=200)
    """`gen_ai.evaluation.name` of the quality score events."""


class AsahiConfig(_Strict):
    """The whole configuration file."""

    feature_store: FeatureStoreSettings
    enricher: EnricherConfig = Field(default_factory=EnricherConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    source_path: Optional[Path] = Field(default=None, exclude=True)
    """The file this configuration was read from (not a configuration key)."""
