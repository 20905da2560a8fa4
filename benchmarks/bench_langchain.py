"""FeatureEnrichmentRunnable cost against its references, on the sample Feast repo.

A sample Feast repository (SQLite online store) is built in a temporary directory and
ONE ``feast.FeatureStore`` is shared by every side (Feast's resolution cache is per
process, see DESIGN.md). Sides are interleaved in blocks, never call by call.

Part 1 (invoke): ``FeatureEnrichmentRunnable(enricher).invoke`` against
``RunnableLambda(enricher.enrich).invoke`` on the same input, so LangChain's own
per-call overhead is on both sides. Three inputs: a prompt string without identity
(the literal ``RunnableLambda(enricher.enrich)``), and a dict with a user id over
FeastClient and over an in-memory client (CPU only; the harshest ratio).
Target: p50 ratio <= 1.1.

Part 2 (batch): ``runnable.batch`` of 1,000 distinct users (one backend call; with
no handler listening the per-input runs are skipped, a second side attaches a
FeatureMonitorCallbackHandler so that every input gets its run) against the raw
``get_online_features`` of the same 1,000 entities and the same features;
``enricher.enrich_batch`` is shown for reference.
Target: p50 ratio <= 1.5.

Part 3 (agent middleware): ``FeatureContextMiddleware.awrap_model_call`` with a
model handler that returns at once, fetching on every call (``refresh="model_call"``, the
worst case), against a bare ``await enricher.aenrich`` of the same user, over Feast and
over the in-memory client; for reference, a hand-written ``wrap_model_call`` (aenrich,
then ``request.override(system_message=...)``: LangChain's own cost of changing a
request) is shown too. With the default ``refresh="run"`` a run's later model calls
reuse the first fetch (shown for reference). Target: p50 ratio <= 1.1.

Part 4 (agent burst): 200 concurrent ``create_agent`` runs (a fake chat model that
records its system message), each for its own user: how many were enriched with their
own user's block (must be all, and no crossing), and the wall time.

Usage: .venv/bin/python benchmarks/bench_langchain.py [--users 2000] [--rounds 15]
[--batch-rounds 25] [--parts invoke,batch,middleware,burst] [--burst 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Mapping

from common import TASK_MAP, MemoryClient, interleave, percentile, sample_refs, task_features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asahi_features.enricher import FeatureEnricher  # noqa: E402
from asahi_features.models import EnrichmentRequest, FeatureVector  # noqa: E402
from asahi_features.settings import EnricherConfig  # noqa: E402

TASK = "general"
FEATURES = task_features("general")
REFS = sample_refs(FEATURES)
INVOKE_TARGET = 1.1
MIDDLEWARE_TARGET = 1.1
BATCH_TARGET = 1.5
PROMPT = "Which plan suits me best?"


def _report(label: str, times: Dict[str, List[float]], ref: str, side: str, target: float) -> bool:
    ref50 = percentile(times[ref], 0.5) * 1e3
    p50 = percentile(times[side], 0.5) * 1e3
    ratio = p50 / ref50
    ok = ratio <= target
    print(
        f"{label:<34} {side:<10} p50 {p50:8.3f} ms | {ref:<10} p50 {ref50:8.3f} ms | "
        f"ratio {ratio:5.2f} (target <= {target:g}) {'ok' if ok else 'MISSED'}"
    )
    return ok


async def ainterleave(
    variants: Mapping[str, Callable[[int], Awaitable[Any]]],
    rounds: int,
    block: int,
    warmup: int = 20,
) -> Dict[str, List[float]]:
    """The async twin of ``common.interleave``: blocks of awaited calls, alternating."""
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for fn in variants.values():
        for i in range(warmup):
            await fn(i)
    order = list(variants.items())
    perf = time.perf_counter
    for r in range(rounds):
        shift = r % len(order)
        for name, fn in order[shift:] + order[:shift]:
            bucket = times[name]
            for i in range(r * block, (r + 1) * block):
                start = perf()
                await fn(i)
                bucket.append(perf() - start)
    return times


def _middleware_part(label: str, enricher: FeatureEnricher, ids: List[str], rounds: int) -> bool:
    """Part 3 for one enricher: the middleware's model-call step vs a bare aenrich."""
    from dataclasses import dataclass

    from langchain.agents.middleware import ModelRequest, ModelResponse
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langgraph.runtime import Runtime

    from asahi_features.langchain import FeatureContextMiddleware

    @dataclass
    class Ctx:
        user_id: str

    per_call = FeatureContextMiddleware(enricher, task_type=TASK, refresh="model_call")
    per_run = FeatureContextMiddleware(enricher, task_type=TASK)
    model = FakeListChatModel(responses=["ok"])
    response = ModelResponse(result=[AIMessage("ok")])
    question = [HumanMessage(PROMPT)]
    system = SystemMessage("You are a helpful sales assistant.")

    async def handler(request: Any) -> Any:
        return response

    def request(i: int, state: Dict[str, Any]) -> Any:
        return ModelRequest(
            model=model,
            messages=list(question),
            system_message=system,
            state=state,  # type: ignore[arg-type]
            runtime=Runtime(context=Ctx(ids[i % len(ids)])),
        )

    # Built before timing: the agent builds its request for every model call anyway.
    fresh = [request(i, {"messages": question}) for i in range(len(ids))]

    def bare(i: int) -> Awaitable[Any]:
        return enricher.aenrich(PROMPT, user_id=ids[i % len(ids)], task_type=TASK)

    async def handmade(i: int) -> Any:
        # the least a hand-written wrap_model_call does: fetch, then override the request
        req = fresh[i % len(fresh)]
        result = await enricher.aenrich(PROMPT, user_id=ids[i % len(ids)], task_type=TASK)
        merged = SystemMessage(f"{system.content}\n\n{result.feature_context.strip()}")
        return await handler(req.override(system_message=merged))

    def middleware(i: int) -> Awaitable[Any]:
        return per_call.awrap_model_call(fresh[i % len(fresh)], handler)

    run_state = per_run.before_agent({}, None) or {}
    in_run = request(0, {"messages": question, **run_state})

    def later_call(i: int) -> Awaitable[Any]:  # a later model call of one run: no fetch
        return per_run.awrap_model_call(in_run, handler)

    async def both() -> Dict[str, List[float]]:
        await later_call(0)  # the run's first call fetches
        return await ainterleave(
            {"aenrich": bare, "handmade": handmade, "middleware": middleware, "later": later_call},
            rounds * 2,
            200,
        )

    times = asyncio.run(both())
    ok = _report(f"middleware call, {label}", times, "aenrich", "middleware", MIDDLEWARE_TARGET)
    _report(f"later call of a run, {label}", times, "aenrich", "later", MIDDLEWARE_TARGET)
    _report(f"hand-written override, {label}", times, "aenrich", "handmade", MIDDLEWARE_TARGET)
    _report(f"middleware vs hand-written, {label}", times, "handmade", "middleware", 1.1)
    return ok


def _burst_part(enricher: FeatureEnricher, ids: List[str], runs: int) -> bool:
    """Part 4: ``runs`` concurrent agent runs, distinct users; all enriched, no crossing."""
    from dataclasses import dataclass

    from langchain.agents import create_agent
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from asahi_features.langchain import FeatureContextMiddleware

    @dataclass
    class Ctx:
        user_id: str

    class Recorder(BaseChatModel):
        seen: Dict[str, str] = {}

        @property
        def _llm_type(self) -> str:
            return "recorder"

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            self.seen[messages[-1].text] = messages[0].text  # question -> system text
            return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])

    model = Recorder()
    agent: Any = create_agent(
        model,
        [],
        system_prompt="S",
        middleware=[FeatureContextMiddleware(enricher, task_type=TASK)],
        context_schema=Ctx,
    )
    users = ids[:runs]
    expected = {
        u: "S\n\n" + enricher.enrich("", user_id=u, task_type=TASK).feature_context.strip()
        for u in users
    }

    async def burst() -> float:
        start = time.perf_counter()
        await asyncio.gather(
            *(agent.ainvoke({"messages": [HumanMessage(f"q {u}")]}, context=Ctx(u)) for u in users)
        )
        return time.perf_counter() - start

    asyncio.run(burst())  # warm up
    model.seen.clear()
    wall = asyncio.run(burst())
    enriched = sum("[Context from" in text for text in model.seen.values())
    own = sum(model.seen.get(f"q {u}") == expected[u] for u in users)
    print(
        f"agent burst of {runs} concurrent runs: enriched {enriched}/{runs}, with their own "
        f"user's block {own}/{runs}, wall {wall * 1e3:.0f} ms "
        f"({wall * 1e3 / runs:.2f} ms per run)"
    )
    return enriched == own == runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--batch-rounds", type=int, default=25, help="blocks of 4 batch calls per side"
    )
    parser.add_argument("--parts", default="invoke,batch,middleware,burst")
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    from feast import FeatureStore

    from asahi_features.langchain import FeatureEnrichmentRunnable
    from asahi_features.sample_repo import build_sample_repo, user_id
    from asahi_features.stores.feast_store import FeastClient

    config = EnricherConfig(
        enabled_task_types=[TASK], task_features=TASK_MAP, freshness_threshold_seconds=10**9
    )
    workdir = Path(tempfile.mkdtemp(prefix="asahi_bench_langchain_"))
    ok = True
    try:
        start = time.perf_counter()
        repo = build_sample_repo(workdir / "repo", users=args.users)
        print(f"built a {args.users}-user SQLite repo in {time.perf_counter() - start:.1f} s")
        store = FeatureStore(repo_path=str(repo))
        client = FeastClient(str(repo), "asahi", feature_store=store)
        enricher = FeatureEnricher(client, config)
        runnable = FeatureEnrichmentRunnable(enricher)
        ids = [user_id(n) for n in range(1, args.users + 1)]
        check = enricher.enrich(PROMPT, user_id=ids[0], task_type=TASK)
        if check.features_used != FEATURES:
            print(f"unexpected enrichment: {check.reason} {check.features_used}")
            return 1

        # -- part 1: invoke ---------------------------------------------------------
        if "invoke" in parts:
            ok &= _invoke_part(runnable, enricher, client, config, ids, args.rounds)
        if "batch" in parts:
            ok &= _batch_part(runnable, enricher, store, ids, args)
        if "middleware" in parts:
            ok &= _middleware_part("Feast", enricher, ids, args.rounds)
            ok &= _middleware_part("memory client", _memory(client, config, ids), ids, args.rounds)
        if "burst" in parts:
            ok &= _burst_part(enricher, ids, min(args.burst, len(ids)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _memory(client: Any, config: EnricherConfig, ids: List[str]) -> FeatureEnricher:
    """An enricher over an in-memory client answering with the first user's vector."""
    vector = client.get_features(ids[0], "user", FEATURES)
    return FeatureEnricher(
        MemoryClient(
            FeatureVector.from_ages(
                "u",
                "user",
                "memory",
                vector.features,
                vector.feature_freshness,
                datetime.now(timezone.utc),
            )
        ),
        config,
    )


def _invoke_part(
    runnable: Any,
    enricher: FeatureEnricher,
    client: Any,
    config: EnricherConfig,
    ids: List[str],
    rounds: int,
) -> bool:
    """Part 1: runnable.invoke vs RunnableLambda(enricher.enrich).invoke."""
    from langchain_core.runnables import RunnableLambda

    from asahi_features.langchain import FeatureEnrichmentRunnable

    lam_str = RunnableLambda(enricher.enrich)
    lam_dict: RunnableLambda[Dict[str, Any], Any] = RunnableLambda(lambda d: enricher.enrich(**d))
    times = interleave(
        {
            "runnable": lambda i: runnable.invoke(PROMPT),
            "lambda": lambda i: lam_str.invoke(PROMPT),
        },
        rounds * 2,
        200,
    )
    ok = _report("invoke str, no identity", times, "lambda", "runnable", INVOKE_TARGET)

    def row(i: int) -> Dict[str, Any]:
        return {"prompt": PROMPT, "user_id": ids[i % len(ids)], "task_type": TASK}

    times = interleave(
        {
            "runnable": lambda i: runnable.invoke(row(i)),
            "lambda": lambda i: lam_dict.invoke(row(i)),
        },
        rounds * 2,
        200,
    )
    ok &= _report("invoke dict + user over Feast", times, "lambda", "runnable", INVOKE_TARGET)

    memory = _memory(client, config, ids)
    mem_runnable = FeatureEnrichmentRunnable(memory)
    mem_lambda: RunnableLambda[Dict[str, Any], Any] = RunnableLambda(lambda d: memory.enrich(**d))
    times = interleave(
        {
            "runnable": lambda i: mem_runnable.invoke(row(i)),
            "lambda": lambda i: mem_lambda.invoke(row(i)),
        },
        rounds * 2,
        200,
    )
    ok &= _report("invoke dict + user, memory client", times, "lambda", "runnable", INVOKE_TARGET)
    return ok


def _batch_part(
    runnable: Any, enricher: FeatureEnricher, store: Any, ids: List[str], args: Any
) -> bool:
    """Part 2: runnable.batch of 1,000 vs the raw Feast read of the same entities."""
    from asahi_features.langchain import FeatureMonitorCallbackHandler
    from asahi_features.monitor import FeatureMonitor

    n = min(args.batch, len(ids))
    batch_ids = ids[:n]
    inputs = [{"prompt": PROMPT, "user_id": u, "task_type": TASK} for u in batch_ids]
    requests = [EnrichmentRequest(prompt=PROMPT, user_id=u, task_type=TASK) for u in batch_ids]
    rows = [{"user_id": u} for u in batch_ids]
    handler = FeatureMonitorCallbackHandler(FeatureMonitor(), keep_finished_runs=0)
    outs = runnable.batch(inputs)
    assert all(o.enrichment.features_available for o in outs[:50])
    raw = lambda i: store.get_online_features(features=REFS, entity_rows=rows).proto  # noqa: E731
    times = interleave(
        {
            "raw": raw,
            "batch": lambda i: runnable.batch(inputs),
            "enrich_bat": lambda i: enricher.enrich_batch(requests),
        },
        args.batch_rounds,
        4,
        warmup=3,
    )
    ok = _report(f"batch of {n} vs raw Feast", times, "raw", "batch", BATCH_TARGET)
    _report(f"enrich_batch of {n} vs raw Feast", times, "raw", "enrich_bat", BATCH_TARGET)
    _report("runnable.batch vs enrich_batch", times, "enrich_bat", "batch", BATCH_TARGET)
    # Measured apart: 1,000 callback runs leave much garbage, and the collections it
    # triggers would land on whichever side runs next.
    print("(informational: with a FeatureMonitorCallbackHandler, i.e. 1,000 callback runs)")
    times = interleave(
        {"raw": raw, "batch+cb": lambda i: runnable.batch(inputs, {"callbacks": [handler]})},
        max(3, args.rounds // 3),
        4,
        warmup=2,
    )
    _report(f"batch of {n} + handler vs raw", times, "raw", "batch+cb", BATCH_TARGET)
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
