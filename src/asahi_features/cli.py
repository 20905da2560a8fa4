"""The ``asahi-features`` command.

Every command prints one clear line and exits non-zero on a user-facing error; a
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional

import typer

from . import __version__
from .errors import AsahiFeaturesError

if TYPE_CHECKING:
    from rich.console import Console

    from .enricher import FeatureEnricher
    from .models import EnrichmentResult
    from .settings import AsahiConfig

app = typer.Typer(
    name="asahi-features",
    help="Enrich LLM prompts with real-time context from feature stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_ENV = "ASAHI_FEATURES_CONFIG"
DEMO_DIR = Path(".asahi-demo")

DEMO_PROMPTS: Dict[str, str] = {
    "product_recommendation": "Recommend a product for this customer.",
    "customer_support": "The customer asks why their last order is late. Draft a reply.",
    "content_generation": "Write a two-sentence announcement of our spring sale.",
    "code_generation": "Write a function that retries an HTTP request.",
    "general": "What should I know about this customer before the call?",
    "summarization": "Summarise the attached release notes.",
    "faq": "How do I reset my password?",
}

_state: Dict[str, Any] = {"debug": False, "secrets": ()}

CONFIG_OPTION: Any = typer.Option(None, "--config", help=f"Config file (default: ${CONFIG_ENV}).")


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _fail(message: str, code: int = 1) -> NoReturn:
    from .stores.http import redact

    typer.echo(f"error: {redact(message, _state['secrets'])}", err=True)
    raise typer.Exit(code)


def _remember_secrets(config: AsahiConfig) -> None:
    """The values of the environment variables the config names for credentials, so that
    no error line can show them (whatever third-party text it quotes)."""
    from .stores.http import secret_parts

    section = config.feature_store
    names: List[str] = []
    if section.tecton is not None:
        names.append(section.tecton.api_key_env)
    values: List[str] = []
    if section.http is not None:
        names.extend(section.http.headers_env.values())
        if section.http.token_env:
            names.append(section.http.token_env)
        if section.http.token_file is not None:
            # an unreadable file: the store reports it by its path
            with contextlib.suppress(OSError, UnicodeDecodeError):
                values.append(section.http.token_file.read_text(encoding="utf-8"))
    values += [os.environ.get(name) or "" for name in names]
    _state["secrets"] = secret_parts([v for raw in values for v in (raw, raw.strip())])


def _run(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; turn any exception into one error line unless --debug."""
    try:
        return func(*args, **kwargs)
    except typer.Exit:
        raise
    except AsahiFeaturesError as exc:
        if _state["debug"]:
            raise
        _fail(f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        if _state["debug"]:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


def _config_path(config: Optional[Path]) -> Path:
    if config is not None:
        return config
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    _fail(f"no configuration: pass --config FILE or set {CONFIG_ENV}", code=2)


def _load(config: Optional[Path]) -> AsahiConfig:
    from .config import load_config

    result: AsahiConfig = _run(load_config, _config_path(config))
    _remember_secrets(result)
    return result


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """asahi-features: context from your feature store, in your prompts."""
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


@app.command()
def enrich(
    prompt: str = typer.Argument(..., help="The prompt to enrich."),
    user_id: Optional[str] = typer.Option(None, "--user-id", help="User entity id."),
    org_id: Optional[str] = typer.Option(None, "--org-id", help="Organization entity id."),
    task: str = typer.Option("general", "--task", help="Task type (see the task map)."),
    entity: Optional[List[str]] = typer.Option(
        None,
        "--entity",
        help="TYPE=ID of another entity type (repeatable), e.g. --entity driver=1001.",
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help=f"Config file (or ${CONFIG_ENV})."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full EnrichmentResult as JSON."),
) -> None:
    """Print the enriched prompt (or the whole result as JSON)."""
    from .enricher import build_enricher

    context = _entity_context(entity or [])
    enricher = _run(build_enricher, _load(config))
    result = _run(
        enricher.enrich,
        prompt,
        user_id=user_id,
        organization_id=org_id,
        task_type=task,
        context=context or None,
    )
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(result.enriched_prompt)
        if not result.features_available:
            typer.echo(f"(not enriched: {result.reason.value})", err=True)


def _entity_context(pairs: List[str]) -> Dict[str, str]:
    """``["driver=1001"]`` -> ``{"driver_id": "1001"}`` (how the enricher finds the id of
    an entity type other than user and organization)."""
    context: Dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            _fail(f"--entity {pair!r}: expected TYPE=ID, e.g. --entity driver=1001", code=2)
        context[f"{name}_id"] = value
    return context


@app.command("init")
def init_command(
    feast_repo: Path = typer.Option(
        ..., "--feast-repo", help="The Feast repository (the folder with feature_store.yaml)."
    ),
    output: Path = typer.Option(
        Path("asahi.yaml"), "--output", "-o", help="Where to write the config ('-': print it)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Write a starter config for an existing Feast repository (read from its registry)."""
    from .config import load_config
    from .starter import starter_config

    to_stdout = str(output) == "-"
    if not to_stdout and output.exists() and not force:
        _fail(f"{output} already exists; pass --force to overwrite it", code=2)
    command = f"asahi-features init --feast-repo {feast_repo}"
    text: str = _run(starter_config, feast_repo, None if to_stdout else output, command)
    if to_stdout:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    loaded = _run(load_config, output)  # what was written loads as written
    tasks = loaded.enricher.enabled_task_types
    entity = next(iter(loaded.enricher.task_features.get("general", {})), "ENTITY")
    typer.echo(f"wrote {output}: {len(tasks)} tasks ({', '.join(tasks)})")
    typer.echo(f"next: asahi-features health --config {output}")
    typer.echo(
        f"      asahi-features enrich 'Summarise this {entity}.' --entity {entity}=ID "
        f"--config {output}"
    )


@app.command()
def features(
    entity_type: Optional[str] = typer.Option(None, "--entity-type", help="Only this type."),
    config: Optional[Path] = typer.Option(
        None, "--config", help=f"Config file (or ${CONFIG_ENV})."
    ),
) -> None:
    """List the features the configured store offers, per entity type."""
    from .config import build_backend

    backend = _run(build_backend, _load(config).feature_store)
    lister = getattr(backend, "list_features", None)
    if lister is None:
        _fail(f"{type(backend).__name__} cannot list its features")
    catalog = _run(lister, entity_type)
    for etype, names in catalog.items():
        typer.echo(f"{etype}: {', '.join(names) if names else '(none)'}")


@app.command()
def health(
    config: Optional[Path] = typer.Option(
        None, "--config", help=f"Config file (or ${CONFIG_ENV})."
    ),
) -> None:
    """Check the store; exit 1 when it is unhealthy."""
    from .config import client_from_config

    client = _run(client_from_config, _load(config))
    healthy = bool(_run(client.health_check))
    typer.echo("healthy" if healthy else "unhealthy")
    if not healthy:
        raise typer.Exit(1)


@app.command()
def stats(
    config: Optional[Path] = typer.Option(
        None, "--config", help=f"Config file (or ${CONFIG_ENV})."
    ),
    snapshot: Optional[Path] = typer.Option(None, "--snapshot", help="A saved monitor file."),
    compare: Optional[str] = typer.Option(
        None,
        "--compare",
        metavar="TASK",
        help="Compare two models on this task type (needs --cheap and --expensive).",
    ),
    cheap: Optional[str] = typer.Option(
        None, "--cheap", metavar="MODEL", help="With --compare: the cheaper model, with features."
    ),
    expensive: Optional[str] = typer.Option(
        None,
        "--expensive",
        metavar="MODEL",
        help="With --compare: the expensive model, without features.",
    ),
    margin: float = typer.Option(
        0.0, "--margin", help="With --compare: how much lower the cheap model may score."
    ),
    as_json: bool = typer.Option(False, "--json", help="With --compare: print the report as JSON."),
) -> None:
    """Print the statistics of a persisted monitor snapshot as JSON, or with --compare,
    whether the cheap model with features can replace the expensive one without them
    (quality with always-valid bounds, cost per request with monitor.model_prices from
    the config, saving per 1,000 requests)."""
    from .monitor import FeatureMonitor

    if compare is None and (cheap is not None or expensive is not None):
        _fail("--cheap and --expensive go with --compare TASK", code=2)
    if compare is not None and (cheap is None or expensive is None):
        _fail("--compare TASK needs both --cheap MODEL and --expensive MODEL", code=2)
    path = snapshot
    monitor_config = None
    if path is None or config is not None:  # prices and confidence come from the config
        loaded = _load(config)
        # a snapshot is one replica's: reading it must not join (and write into) the
        # replicas' shared state
        monitor_config = loaded.monitor.model_copy(update={"shared_state": None})
        if path is None:
            path = loaded.monitor.persist_path
        if path is None:
            _fail("monitor.persist_path is not set in the config; pass --snapshot FILE", code=2)
    if not path.exists():
        _fail(f"no monitor snapshot at {path} (FeatureMonitor.save() writes one)", code=2)
    monitor = _run(FeatureMonitor.load, path, monitor_config)
    if compare is None:
        typer.echo(json.dumps(monitor.get_stats(), indent=2, default=str))
        return
    report = _run(monitor.compare, compare, cheap=cheap, expensive=expensive, margin=margin)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))


@app.command("build-sample-repo")
def build_sample_repo_command(
    directory: Path = typer.Argument(DEMO_DIR / "feast_repo", help="Where to build it."),
    users: int = typer.Option(1000, min=1, help="Number of sample users."),
    organizations: int = typer.Option(50, min=1, help="Number of sample organisations."),
    redis: Optional[str] = typer.Option(None, help="host:port of Redis (default: SQLite)."),
) -> None:
    """Build the sample Feast repository (feature_store.yaml, data, online store)."""
    path = _build_repo(directory, users=users, organizations=organizations, redis=redis)
    typer.echo(f"sample Feast repository ready in {path}")


def _build_repo(
    directory: Path, *, users: int = 1000, organizations: int = 50, redis: Optional[str] = None
) -> Path:
    from rich.progress import Progress

    from .sample_repo import build_sample_repo

    with Progress(transient=True) as progress:
        task_id = progress.add_task("building the sample Feast repo", total=None)

        def report(step: str, *_: Any) -> None:
            progress.update(task_id, description=f"sample repo: {step}")

        kwargs: Dict[str, Any] = {"users": users, "organizations": organizations}
        if redis:
            kwargs.update(online_store="redis", redis_connection=redis)
        result: Path = _run(build_sample_repo, directory, progress=report, **kwargs)
    return result


def _demo_config_text(repo: Path) -> str:
    from .sample_repo import SAMPLE_TASK_FEATURES

    tasks = ", ".join(SAMPLE_TASK_FEATURES)
    return (
        "# Written by `asahi-features demo`: the sample Feast repo, every mapped task enabled.\n"
        "feature_store:\n"
        "  provider: feast\n"
        "  feast:\n"
        f"    repo_path: {repo.resolve()}\n"
        "    project: asahi\n"
        "  timeout_ms: 200\n"
        "  fallback_on_timeout: true\n"
        "enricher:\n"
        f"  enabled_task_types: [{tasks}]\n"
        f"  task_features: {json.dumps(SAMPLE_TASK_FEATURES)}\n"
    )


@app.command()
def demo(
    workdir: Path = typer.Option(DEMO_DIR, help="Working directory for the sample repo."),
    users: int = typer.Option(1000, min=10, help="Sample users to generate."),
    rebuild: bool = typer.Option(False, help="Rebuild the sample repo even if it exists."),
    show: int = typer.Option(2, min=1, max=10, help="Sample users shown per task."),
) -> None:
    """Build (or reuse) the sample Feast repo and show prompts before and after enrichment."""
    from .config import load_config
    from .enricher import build_enricher
    from .sample_repo import stale_user_ids, user_id

    console = _console()
    repo = workdir / "feast_repo"
    if rebuild or not (repo / "feature_store.yaml").exists():
        _build_repo(repo, users=users)
    config_path = workdir / "asahi.yaml"
    config_path.write_text(_demo_config_text(repo), encoding="utf-8")
    enricher: FeatureEnricher = _run(build_enricher, _run(load_config, config_path))
    # The first read loads Feast's registry (a few hundred ms): do it before the clock
    # starts, as a service would at start-up, so the demo shows steady-state latency.
    _run(enricher.client.health_check)

    sample_users = [user_id(n) for n in range(1, show + 1)]
    stale = stale_user_ids(users)[:1]
    console.rule("[bold]asahi-features demo[/bold]")
    console.print(f"Feast repo: {repo}  config: {config_path}\n")
    for task, prompt in DEMO_PROMPTS.items():
        entity_types = list(enricher.config.task_features.get(task, {}))
        ids = sample_users + (stale if "user" in entity_types else [])
        for uid in ids:
            org = "org_001" if "organization" in entity_types else None
            result = _run(enricher.enrich, prompt, user_id=uid, organization_id=org, task_type=task)
            _print_result(console, task, uid if org is None else org, result)
    console.print(
        f"Try: asahi-features enrich 'Recommend a product' --user-id {sample_users[0]} "
        f"--task product_recommendation --config {config_path}"
    )


def _print_result(console: Console, task: str, who: str, result: EnrichmentResult) -> None:
    from rich.panel import Panel
    from rich.text import Text

    dropped: List[str] = []
    if result.dropped_stale:
        dropped.append(f"stale: {', '.join(result.dropped_stale)}")
    if result.dropped_budget:
        dropped.append(f"over budget: {', '.join(result.dropped_budget)}")
    if result.dropped_policy:
        dropped.append(f"policy: {', '.join(result.dropped_policy)}")
    summary = (
        f"tokens added: {result.feature_tokens_added}  "
        f"latency: {result.enrichment_latency_ms:.2f} ms  "
        f"outcome: {result.reason.value}" + (f"  dropped ({'; '.join(dropped)})" if dropped else "")
    )
    body = Text()
    body.append("before: ", style="bold")
    body.append(result.original_prompt + "\n\n")
    body.append("after:\n", style="bold")
    body.append(result.enriched_prompt + "\n\n")
    body.append(summary, style="dim")
    console.print(Panel(body, title=f"{task} · {who}", title_align="left"))


def main() -> None:
    """Entry point of the console script."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
