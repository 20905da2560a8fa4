"""Writes the notebooks from the cell sources below, executed, with their outputs.

Run: ``python notebooks/build_notebooks.py`` (all of them, executed in this directory like
nbmake does) or ``--check`` (exit 1 when a stored notebook's cells differ from these
sources: a test runs it). Keeping the cells here makes the notebooks reviewable as code;
the .ipynb files are stored executed, so GitHub shows their results and plots, and
``make test`` re-executes them (nbmake), so they never rot.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

MONITORING = [
    (
        "md",
        """# Monitoring: does enrichment really improve answers?

This notebook runs a simulated evaluation with a **holdout group** (requests that are
deliberately not enriched), plots quality with and without features per task type, the
latency distribution and the token budget use, and shows how `should_enrich` reacts to
an outage and to a task where enrichment does not help.

Everything runs offline. The "judge" below is a deterministic stand-in for an evaluation
run (an LLM-as-judge, human ratings, or LangSmith/LlamaIndex evaluators); in production
you would call `monitor.record_quality(result.enrichment_id, score)` with real scores.""",
    ),
    (
        "code",
        """import json
import random
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from asahi_features import (
    EnricherConfig,
    FeatureEnricher,
    FeatureMonitor,
    GuardedClient,
    LocalFeatureStore,
    MonitorConfig,
)
from asahi_features.errors import FeatureStoreUnavailableError
from asahi_features.settings import DEFAULT_TASK_FEATURES""",
    ),
    (
        "md",
        """## A feature store with 300 users

A local JSON store keeps this notebook fast; the LangChain and LlamaIndex notebooks use
the sample Feast repository. `Switchable` lets us simulate an outage later.""",
    ),
    (
        "code",
        """rng = random.Random(7)
from datetime import datetime, timezone

now = datetime.now(timezone.utc).isoformat()
users = {
    f"u_{i:04d}": {
        "updated_at": now,
        "features": {
            "purchase_history": rng.sample(["shoes", "jacket", "belt", "sneakers", "hat", "scarf"], 3),
            "browsing": rng.choice(["athletic wear", "outdoor gear", "formal wear"]),
            "preferences": rng.choice(["casual athletic", "classic", "minimalist"]),
            "budget_level": rng.choice(["budget-conscious", "medium", "premium"]),
            "demographics": "25-34, urban",
            "tier": rng.choice(["free", "silver", "gold"]),
            "recent_tickets": ["T-1: late delivery"],
            "product_owned": ["Asahi Pro"],
            "preferred_language": "en",
        },
    }
    for i in range(1, 301)
}
data_path = Path(tempfile.mkdtemp()) / "features.json"
LocalFeatureStore.write(data_path, {"user": users})


class Switchable:
    \"\"\"Wraps a backend; `down = True` simulates an outage.\"\"\"

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def get_features(self, entity_id, entity_type, feature_names):
        if self.down:
            raise FeatureStoreUnavailableError("simulated outage")
        return self.inner.get_features(entity_id, entity_type, feature_names)

    def get_batch_features(self, entity_ids, entity_type, feature_names):
        if self.down:
            raise FeatureStoreUnavailableError("simulated outage")
        return self.inner.get_batch_features(entity_ids, entity_type, feature_names)

    def health_check(self):
        return not self.down


backend = Switchable(LocalFeatureStore(data_path))
client = GuardedClient(backend, timeout_ms=200, breaker_minimum_calls=5, breaker_reset_seconds=0.5)""",
    ),
    (
        "md",
        """## The monitor, with a 25% holdout

`holdout_fraction` puts a reproducible share of users (by a hash of the user id) in the
control group for each task, so every user gets a consistent experience and the
comparison is fair. `quality_without_features` averages every request that got no
features (the held-out ones and those that fell back, e.g. because the store was down);
`quality_held_out` is the control group alone, and once it has `min_samples` scores
(`quality_basis: held_out`) it is what enrichment is compared with. Tasks must be
enabled in the enricher to be enriched at all.""",
    ),
    (
        "code",
        """tasks = ["product_recommendation", "customer_support", "faq"]
monitor = FeatureMonitor(
    MonitorConfig(holdout_fraction={"*": 0.25}, min_samples=30, min_quality_gain=0.05, exploration_fraction=0.1)
)
monitor.watch(client)  # should_enrich follows the guard's circuit breaker
enricher = FeatureEnricher(client, EnricherConfig(enabled_task_types=tasks), monitor=monitor)

# a user outside the control group (membership is a stable hash of the user id)
uid = next(f"u_{i:04d}" for i in range(1, 301) if not monitor.is_held_out("product_recommendation", f"u_{i:04d}"))
result = enricher.enrich("Recommend a product for this customer.", user_id=uid, task_type="product_recommendation")
print(result.enriched_prompt)
print(result.reason.value, result.feature_tokens_added, "tokens")""",
    ),
    (
        "md",
        """## A simulated evaluation run

The judge scores an answer higher when the prompt carried the customer's context, for
the two tasks where context matters. For `faq` the context does not help (an FAQ answer
is the same for everybody), so the judge gives the same score either way.""",
    ),
    (
        "code",
        """judge = random.Random(11)
HELPS = {"product_recommendation": 0.25, "customer_support": 0.15, "faq": 0.0}


def judge_score(task, result):
    base = 0.6 + judge.gauss(0, 0.05)
    return max(0.0, min(1.0, base + (HELPS[task] if result.features_available else 0.0)))


results = []
for i in range(900):
    task = tasks[i % 3]
    uid = f"u_{judge.randint(1, 300):04d}"
    res = enricher.enrich("Help this customer.", user_id=uid, task_type=task)
    monitor.record_quality(res.enrichment_id, judge_score(task, res))
    results.append(res)

stats = monitor.get_stats()
print(json.dumps({k: stats[k] for k in [
    "total_enrichments", "successful_enrichments", "held_out_enrichments",
    "quality_with_features", "quality_without_features", "quality_held_out",
    "quality_basis", "quality_delta", "feature_store_availability_pct",
]}, indent=2))
for task in tasks:
    t = stats["task_types"][task]
    print(f"{task:24s} basis={t['quality_basis']} delta={t['quality_delta']:+.3f} "
          f"bounds=[{t['quality_gain_lower_bound']:+.3f}, {t['quality_gain_upper_bound']:+.3f}] "
          f"samples={t['quality_delta_samples']} disabled_for_quality={t['disabled_for_quality']}")""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 3, figsize=(15, 4))
width = 0.38
xs = range(len(tasks))
with_q = [stats["task_types"][t]["quality"]["with_features"]["mean"] for t in tasks]
held_q = [stats["task_types"][t]["quality"]["held_out"]["mean"] for t in tasks]
axes[0].bar([x - width / 2 for x in xs], with_q, width, label="with features")
axes[0].bar([x + width / 2 for x in xs], held_q, width, label="held out")
axes[0].set_xticks(list(xs), tasks, rotation=15)
axes[0].set_ylim(0, 1)
axes[0].set_title("Quality by task type")
axes[0].set_ylabel("mean quality score (0-1)")
axes[0].set_xlabel("task type")
axes[0].legend()
axes[1].hist([r.enrichment_latency_ms for r in results], bins=40)
axes[1].set_title("Enrichment latency")
axes[1].set_xlabel("latency (ms)")
axes[1].set_ylabel("requests")
axes[2].hist([r.feature_tokens_added for r in results if r.features_available], bins=20)
axes[2].axvline(enricher.config.max_feature_tokens, color="red", linestyle="--", label="budget")
axes[2].set_title("Tokens added per enriched prompt")
axes[2].set_xlabel("tokens added")
axes[2].set_ylabel("prompts")
axes[2].legend()
gains = ", ".join(f"{t} {w - h:+.2f}" for t, w, h in zip(tasks, with_q, held_q))
fig.suptitle(f"Quality gain from features, per task ({gains}); every prompt within its budget")
fig.tight_layout()
print("p50/p95/p99 latency (ms):", stats["latency_ms"])""",
    ),
    (
        "md",
        """## `should_enrich` where enrichment does not help

With enough samples in both groups, the monitor keeps always-valid bounds of the gain
(enriched minus held out): bounds that hold at every sample size at once, so reading the
decision on every request does not inflate its error rate. Enrichment is disabled when
the upper bound falls below `min_quality_gain` (here 0.05: enrichment must be worth at
least five points of quality to pay for its tokens), and enabled again only when the
lower bound rises above it. For `faq` it does not help, so the monitor stops paying for
enrichment there, while a small exploration share keeps collecting evidence in case
that changes.""",
    ),
    (
        "code",
        """for task in tasks:
    print(task, monitor.decision(task))
assert monitor.decision("product_recommendation").enrich
assert monitor.decision("faq").reason in ("quality_no_gain", "exploration")""",
    ),
    (
        "md",
        """## Can the cheaper model with context replace the expensive one?

The product question: does a cheap model **with** the customer's features answer as
well as an expensive model **without** them, and what does switching save? Here, half of
the users (a 50% holdout, a fair random split) are answered by the expensive model
without features and the other half by the cheap model with features. Each score is
recorded with `model=` and the call's token usage, and `monitor.model_prices` (example
prices per 1,000 tokens) turns usage into cost. `monitor.compare()` gives the quality
difference with always-valid bounds and the saving per 1,000 requests; the CLI prints
the same report with `asahi-features stats --compare TASK --cheap M1 --expensive M2`.""",
    ),
    (
        "code",
        """CHEAP, EXPENSIVE = "gpt-4o-mini", "gpt-4o"
ab_monitor = FeatureMonitor(MonitorConfig(
    holdout_fraction={"product_recommendation": 0.5},
    min_samples=30,
    model_prices={  # example prices per 1,000 tokens
        CHEAP: {"input_per_1k_tokens": 0.00015, "output_per_1k_tokens": 0.0006},
        EXPENSIVE: {"input_per_1k_tokens": 0.0025, "output_per_1k_tokens": 0.01},
    },
))
ab_enricher = FeatureEnricher(client, EnricherConfig(enabled_task_types=tasks), monitor=ab_monitor)
answers = random.Random(5)
PROMPT_TOKENS = 350  # the question and instructions, before any features

for _ in range(600):
    uid = f"u_{answers.randint(1, 300):04d}"
    res = ab_enricher.enrich("Recommend a product for this customer.", user_id=uid,
                             task_type="product_recommendation")
    if res.features_available:  # cheap model, with the customer's context
        model, mean = CHEAP, 0.84
    else:                       # expensive model, without
        model, mean = EXPENSIVE, 0.85
    score = max(0.0, min(1.0, answers.gauss(mean, 0.06)))
    ab_monitor.record_quality(res.enrichment_id, score, model=model,
                              input_tokens=PROMPT_TOKENS + res.feature_tokens_added,
                              output_tokens=answers.randint(150, 250))

report = ab_monitor.compare("product_recommendation", cheap=CHEAP, expensive=EXPENSIVE, margin=0.03)
print(report)""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 2, figsize=(12, 4))
names = [f"{CHEAP}\\nwith features", f"{EXPENSIVE}\\nwithout features"]
quality = [report.cheap_quality, report.expensive_quality]
# the always-valid bounds of the difference, drawn on the cheap model's bar
err = [[report.difference - report.lower_bound], [report.upper_bound - report.difference]]
axes[0].bar(names, quality, color=["tab:green", "tab:blue"])
axes[0].errorbar([0], [report.cheap_quality], yerr=err, color="black", capsize=8,
                 label="bounds of the difference vs the expensive model")
axes[0].axhline(report.expensive_quality - report.margin, color="gray", linestyle="--",
                label=f"expensive model - margin ({report.margin})")
axes[0].set_ylim(0.6, 1.0)
axes[0].set_ylabel("mean quality score (0-1)")
axes[0].set_xlabel("model and prompt")
axes[0].legend(loc="lower right", fontsize=8)
costs = [1000 * report.cheap_cost_per_request, 1000 * report.expensive_cost_per_request]
axes[1].bar(names, costs, color=["tab:green", "tab:blue"])
axes[1].set_ylabel("cost per 1,000 requests (price units)")
axes[1].set_xlabel("model and prompt")
verdict = f"is within {report.margin} of" if report.cheap_not_worse else "is not shown to match"
fig.suptitle(
    f"{CHEAP} with features {verdict} {EXPENSIVE} without "
    f"(difference {report.difference:+.3f}, "
    f"bounds [{report.lower_bound:+.3f}, {report.upper_bound:+.3f}]) "
    f"and saves {report.saving_per_1000_requests:.2f} per 1,000 requests"
)
fig.tight_layout()
assert report.cheap_not_worse and report.saving_per_1000_requests > 0""",
    ),
    (
        "md",
        """## An outage, and the recovery

When the store goes down, the guard falls back (every request is still answered, just
without context), its circuit breaker opens once half of its recent reads have failed,
and the monitor pauses enrichment. After the cool-down the breaker lets two probe reads
through; once the store is back, enrichment resumes by itself.""",
    ),
    (
        "code",
        """import time

backend.down = True
outcomes = [enricher.enrich("Help.", user_id="u_0002", task_type="customer_support").reason.value for _ in range(10)]
print("during the outage:", outcomes)
print("breaker:", client.breaker.state.value, "| should_enrich:", monitor.decision("customer_support"))

backend.down = False
time.sleep(0.6)  # the breaker's cool-down (breaker_reset_seconds=0.5)
after = [enricher.enrich("Help.", user_id="u_0002", task_type="customer_support").reason.value for _ in range(3)]
print("after recovery:", after)
print("breaker:", client.breaker.state.value, "| should_enrich:", monitor.decision("customer_support"))
assert after[-1] in ("enriched", "held_out")
stats = monitor.get_stats()
print("availability overall: %.1f%%, recent: %.1f%%" % (
    stats["feature_store_availability_pct"], stats["feature_store_availability_pct_recent"]))""",
    ),
    (
        "md",
        """## Export

`monitor.snapshot()` is JSON-serialisable, `monitor.save()` / `FeatureMonitor.load()`
persist the quality history across restarts, and `monitor.register_prometheus()` exposes
the counters to a Prometheus scrape.""",
    ),
    (
        "code",
        """from prometheus_client import CollectorRegistry, generate_latest

registry = CollectorRegistry()
monitor.register_prometheus(registry)
print("\\n".join(line for line in generate_latest(registry).decode().splitlines() if line.startswith("asahi_features_enrichments_total"))[:800])
snapshot_path = monitor.save(Path(tempfile.mkdtemp()) / "monitor.json")
print("saved to", snapshot_path, "-", len(json.dumps(monitor.snapshot())), "bytes")""",
    ),
]

LANGCHAIN = [
    (
        "md",
        """# LangChain quickstart: feature-enriched prompts from Feast

The sample Feast repository (SQLite online store, embedded, no server) feeds a
`FeatureEnrichmentRunnable`, which sits in front of a chat model. Everything runs
offline with a small fake chat model that shows what it received; the cell that builds
the model shows where a real one plugs in.""",
    ),
    (
        "code",
        """import tempfile
from pathlib import Path

from asahi_features import build_enricher
from asahi_features.sample_repo import build_sample_repo

workdir = Path(tempfile.mkdtemp(prefix="asahi_nb_"))
repo = build_sample_repo(workdir / "feast_repo", users=200, organizations=10)
config_path = workdir / "asahi.yaml"
config_path.write_text(f\"\"\"
feature_store:
  provider: feast
  feast: {{repo_path: {repo}, project: asahi}}
  timeout_ms: 500
enricher:
  enabled_task_types: [general, product_recommendation, customer_support]
monitor:
  holdout_fraction: {{general: 0.3}}
\"\"\")
enricher = build_enricher(config_path, monitor=True)  # guarded FeastClient + FeatureMonitor
monitor = enricher.monitor
assert enricher.client.health_check()  # warm up: loads the Feast registry""",
    ),
    ("md", "## Before and after"),
    (
        "code",
        """result = enricher.enrich("Recommend a product for this customer.",
                         user_id="u_0001", task_type="product_recommendation")
print("BEFORE:\\n" + result.original_prompt)
print("\\nAFTER:\\n" + result.enriched_prompt)
print(f"\\n{result.feature_tokens_added} tokens added in {result.enrichment_latency_ms:.2f} ms; "
      f"features: {result.features_used}")""",
    ),
    (
        "md",
        """## `runnable | llm`

`EchoChat` stands in for a chat model and answers with the lines of context it was given.
To use a real model, replace it, e.g. `from langchain_anthropic import ChatAnthropic;
llm = ChatAnthropic(model="claude-sonnet-4-5")`. The user id goes in
`config["configurable"]`, where a server puts the authenticated identity.""",
    ),
    (
        "code",
        """from langchain_core.language_models import SimpleChatModel
from langchain_core.prompts import ChatPromptTemplate

from asahi_features.langchain import FeatureEnrichmentRunnable, FeatureMonitorCallbackHandler


class EchoChat(SimpleChatModel):
    \"\"\"A fake chat model: it replies with the context lines it received.\"\"\"

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _call(self, messages, stop=None, **kwargs):
        text = "\\n".join(str(m.content) for m in messages)
        lines = [line for line in text.splitlines() if line.startswith("- ")]
        return "I know: " + "; ".join(lines) if lines else "I know nothing about you."


llm = EchoChat()
chain = FeatureEnrichmentRunnable(enricher, task_type="product_recommendation") | llm
print(chain.invoke("Recommend a product for this customer.",
                   config={"configurable": {"user_id": "u_0002"}}).content)""",
    ),
    (
        "md",
        """## A prompt template with a `{feature_context}` slot

With `output="dict"` the runnable passes the input on, plus `feature_context` (the block
alone), `enriched_prompt` and `enrichment` (the full result).""",
    ),
    (
        "code",
        """template = ChatPromptTemplate.from_messages([
    ("system", "You are a helpful sales assistant.\\n{feature_context}"),
    ("human", "{prompt}"),
])
templated = FeatureEnrichmentRunnable(enricher, output="dict", task_type="customer_support") | template | llm
print(templated.invoke({"prompt": "Where is my order?"},
                       config={"configurable": {"user_id": "u_0003"}}).content)""",
    ),
    (
        "md",
        """## Batch: one Feast read for every input

`batch` of N inputs makes one backend batch call per entity type, and each input keeps
its own identity (a list of configs) and its own callback run.""",
    ),
    (
        "code",
        """handler = FeatureMonitorCallbackHandler(monitor)
users = [f"u_{n:04d}" for n in range(4, 10)]
configs = [{"configurable": {"user_id": u}, "callbacks": [handler]} for u in users]
answers = chain.batch(["Recommend a product for this customer."] * len(users), configs)
for user, answer in zip(users, answers):
    print(user, "->", answer.content[:90])""",
    ),
    (
        "md",
        """## Quality scores and the monitor

A score for a finished run (from a user's thumbs-up, an evaluator, a human rater) lands
on that run's enrichment. `general` has a 30% holdout, so the monitor can compare
enriched answers with a fair control group.""",
    ),
    (
        "code",
        """import uuid

general = FeatureEnrichmentRunnable(enricher) | llm
for n in range(10, 90):
    run_id = uuid.uuid4()
    answer = general.invoke("Any advice for me?", config={
        "configurable": {"user_id": f"u_{n:04d}"}, "callbacks": [handler], "run_id": run_id})
    # a toy evaluator: answers that use the customer's profile score higher
    handler.record_run_quality(run_id, 0.9 if "I know:" in answer.content else 0.5)

stats = monitor.get_stats()
for key in ["total_enrichments", "successful_enrichments", "held_out_enrichments",
            "quality_with_features", "quality_without_features",
            "feature_store_availability_pct", "avg_latency_ms"]:
    print(f"{key:32s} {stats[key]}")
print("general:", {k: stats["task_types"]["general"][k] for k in ["quality_delta", "quality_delta_samples"]})""",
    ),
    (
        "md",
        """## Agents: `create_agent` with the middleware and the features tool

`FeatureContextMiddleware` puts the user's block into the system prompt of each model
call of a `langchain.agents.create_agent` agent (fetched once per run), never into the
agent's messages: the checkpointer below holds no copy of the profile.
`create_feature_tool` lets the model ask for the context itself; the identity is
injected from the run's `context`, never taken from the model. `ToolCallingEcho` stands
in for a tool-calling chat model.""",
    ),
    (
        "code",
        """import uuid
from dataclasses import dataclass
from typing import Optional

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from asahi_features.langchain import FeatureContextMiddleware, create_feature_tool


@dataclass
class UserContext:
    user_id: Optional[str] = None


class ToolCallingEcho(BaseChatModel):
    \"\"\"A fake tool-calling chat model: optionally asks the features tool first, then
    replies with the context lines it was given.\"\"\"

    ask_tool: bool = False

    @property
    def _llm_type(self) -> str:
        return "tool-calling-echo"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        if self.ask_tool and not isinstance(messages[-1], ToolMessage):
            call = {"name": "get_user_context", "args": {}, "id": uuid.uuid4().hex}
            return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call]))])
        lines = [l for m in messages for l in m.text.splitlines() if l.startswith("- ")]
        reply = "I know: " + "; ".join(lines) if lines else "I know nothing about you."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


saver = InMemorySaver()
agent = create_agent(
    ToolCallingEcho(),
    [],
    system_prompt="You are a helpful sales assistant.",
    middleware=[FeatureContextMiddleware(enricher, task_type="product_recommendation")],
    context_schema=UserContext,
    checkpointer=saver,
)
thread = {"configurable": {"thread_id": "notebook"}}
for question in ["Recommend a product for me.", "Anything else?"]:
    out = agent.invoke({"messages": [{"role": "user", "content": question}]}, thread,
                       context=UserContext(user_id="u_0004"))
    print(question, "->", out["messages"][-1].text[:100])
saved = agent.get_state(thread).values["messages"]
print("saved messages:", len(saved), "| copies of the context:",
      sum("[Context from" in m.text for m in saved))

tool_agent = create_agent(ToolCallingEcho(ask_tool=True), [create_feature_tool(enricher)],
                          context_schema=UserContext)
out = tool_agent.invoke({"messages": [{"role": "user", "content": "What do you know about me?"}]},
                        context=UserContext(user_id="u_0005"))
print("tool ->", out["messages"][2].text.splitlines()[0], "...", out["messages"][2].artifact.reason.value)""",
    ),
    (
        "md",
        """## Traces without the profile

The runnable's own run reports feature names, outcome and counts, never values
(`trace_values=False`, the default). The prompts the model receives do carry the
block: `feature_anonymizer()` masks it in whatever LangSmith would receive
(`langsmith.Client(anonymizer=feature_anonymizer())`).""",
    ),
    (
        "code",
        """from asahi_features.langchain import feature_anonymizer

prompt = enricher.enrich("Recommend a product.", user_id="u_0004",
                         task_type="product_recommendation").enriched_prompt
print(feature_anonymizer()({"inputs": {"prompt": prompt}}))""",
    ),
]

LLAMA_INDEX = [
    (
        "md",
        """# LlamaIndex: per-user context in query and chat engines

`FeatureContextPostprocessor` adds the user's feature block as one node, placed last in
`node_postprocessors`. `feature_context(...)` says who the current request is for (a
`ContextVar`, so concurrent requests never see each other's users). The LLM here is
`MockLLM`, which echoes its prompt so you see exactly what a real model would receive;
swap in any LlamaIndex LLM (e.g. `from llama_index.llms.anthropic import Anthropic`).""",
    ),
    (
        "code",
        """import tempfile
from pathlib import Path

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor

from asahi_features import (EnricherConfig, FeastClient, FeatureEnricher, FeatureMonitor,
                            GuardedClient)
from asahi_features.sample_repo import build_sample_repo
from asahi_features.llama_index import (FeatureContextPostprocessor, FeatureMonitorEventHandler,
                                        feature_context)

Settings.llm = MockLLM()                       # echoes the prompt; use a real LLM here
Settings.embed_model = MockEmbedding(embed_dim=8)

repo = build_sample_repo(Path(tempfile.mkdtemp()) / "feast_repo", users=50, organizations=5)
client = GuardedClient(FeastClient(str(repo), "asahi"), timeout_ms=500)
assert client.health_check()  # warm up: loads the Feast registry
enricher = FeatureEnricher(client, EnricherConfig(
    enabled_task_types=["general", "product_recommendation", "customer_support"]))
monitor = FeatureMonitor()
handler = FeatureMonitorEventHandler(monitor).attach()  # records every enrichment event""",
    ),
    ("md", "## A query engine"),
    (
        "code",
        """index = VectorStoreIndex.from_documents([
    Document(text="Trail Runner 2: a light trail-running shoe with a rock plate."),
    Document(text="City Parka: a warm, water-resistant winter jacket."),
    Document(text="Support: orders ship in 2 days; late orders are refunded on request."),
])
post = FeatureContextPostprocessor(enricher, task_type="product_recommendation")
engine = index.as_query_engine(
    node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.1), post],  # ours LAST
)
with feature_context(user_id="u_0001"):
    print(engine.query("What should I buy next?"))""",
    ),
    (
        "md",
        """## Per-user answers

The same shared engine, two users: each prompt holds only its own user's features.""",
    ),
    (
        "code",
        """for user in ["u_0002", "u_0003"]:
    with feature_context(user_id=user):
        answer = str(engine.query("What should I buy next?"))
    print(user, [line for line in answer.splitlines() if line.startswith("- ")])""",
    ),
    (
        "md",
        """## Concurrent async queries

Fifty concurrent `aquery` calls over one engine; the check below confirms no prompt
contains another user's purchase history.""",
    ),
    (
        "code",
        """import asyncio

users = [f"u_{n:04d}" for n in range(1, 51)]
histories = {u: enricher.enrich("x", user_id=u, task_type="product_recommendation").enriched_prompt
             .split("- Recent activity: ")[1].split("\\n")[0] for u in users if u != "u_0007"}


async def ask(user):
    with feature_context(user_id=user):
        return user, str(await engine.aquery("What should I buy next?"))


answers = await asyncio.gather(*(ask(u) for u in users))
crossings = sum(1 for u, text in answers for other, h in histories.items()
                if other != u and f"Recent activity: {h}\\n" in text)
print(f"{len(answers)} answers, {crossings} prompts with another user's data")""",
    ),
    ("md", "## A context chat engine"),
    (
        "code",
        """chat = index.as_chat_engine(chat_mode="context", node_postprocessors=[post])
with feature_context(user_id="u_0004", task_type="customer_support"):
    reply = chat.chat("My order is late. What can you do?")
print([line for line in str(reply).splitlines() if line.startswith("- ")])""",
    ),
    (
        "md",
        """## Agents: the block in every LLM call, through the agent's memory

`FeatureMemoryBlock` is a LlamaIndex `Memory` block: every LLM call of every turn of a
`FunctionAgent`, `ReActAgent` or `AgentWorkflow` carries the user's block (refreshed at
each call, never truncated by the memory's token limit). The LLM below is LlamaIndex's
`MockFunctionCallingLLM` with a generator that shows what it received.""",
    ),
    (
        "code",
        """import warnings

from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import Memory
from llama_index.core.workflow import Context

from asahi_features.llama_index import (FeatureMemoryBlock, create_feature_tool,
                                        set_workflow_identity)

warnings.filterwarnings("ignore", category=DeprecationWarning)  # pydantic noise from workflows
seen = []


def answer(messages, **kwargs):
    seen.append("\\n".join(f"{m.role.value}: {m.content}" for m in messages))
    return ChatMessage(role="assistant", content="(answer)")


agent_llm = MockFunctionCallingLLM(response_generator=answer, is_chat_model=True)
agent = FunctionAgent(llm=agent_llm, tools=[], system_prompt="You are a shop assistant.")
block = FeatureMemoryBlock(enricher, user_id="u_0005", task_type="product_recommendation")
memory = Memory.from_defaults(session_id="u_0005-chat", memory_blocks=[block])
await agent.run("What should I buy next?", memory=memory)
print(seen[-1])""",
    ),
    (
        "md",
        """## Identity that survives a workflow

A `feature_context(...)` block reaches a run only if it is entered *before*
`agent.run(...)` creates the handler. The workflow `Context` store reaches every step and
tool of the run whenever the handler was created; one shared block (no identity of its
own) reads it. `create_feature_tool` reads it too: the model cannot pick the user.""",
    ),
    (
        "code",
        """shared = FeatureMemoryBlock(enricher, task_type="product_recommendation")
shop = FunctionAgent(name="shop", description="Shop assistant", llm=agent_llm, tools=[])
workflow = AgentWorkflow(agents=[shop], root_agent="shop")
ctx = Context(workflow)
await set_workflow_identity(ctx, user_id="u_0006")
await workflow.run("Hello!", ctx=ctx, memory=Memory.from_defaults(session_id="wf",
                                                                   memory_blocks=[shared]))
print("enriched:", shared.last_result.features_available)

tool = create_feature_tool(enricher, task_type="product_recommendation")
print("tool arguments:", list(tool.metadata.get_parameters_dict()["properties"]))
print((await tool.acall(ctx=ctx, question="what do I like?")).content)""",
    ),
    (
        "md",
        """## Every LLM call of every response mode

As a node, the block reaches only the LLM call whose chunk holds it (one of N in
`refine`, `tree_summarize`, ...). `mode="prompt"` plus `apply_feature_prompts(engine)`
puts it in every call instead, and it is never a source node (never cited).""",
    ),
    (
        "code",
        """from asahi_features.llama_index import apply_feature_prompts

prompt_post = FeatureContextPostprocessor(enricher, task_type="product_recommendation",
                                          mode="prompt")
refine = apply_feature_prompts(index.as_query_engine(
    response_mode="refine", similarity_top_k=3, node_postprocessors=[prompt_post]))
with feature_context(user_id="u_0001"):
    response = refine.query("What should I buy next?")
print("source nodes:", len(response.source_nodes), "- none of them is the block")
print(str(response)[:400])""",
    ),
    ("md", "## What the monitor saw"),
    (
        "code",
        """stats = monitor.get_stats()
for key in ["total_enrichments", "successful_enrichments", "avg_features_used",
            "avg_latency_ms", "feature_store_availability_pct"]:
    print(f"{key:32s} {stats[key]}")
handler.detach()
client.close()""",
    ),
]

AGENTS = [
    (
        "md",
        """# Agents: per-user context for LangChain and LlamaIndex agents

An agent calls its model several times per request (tool calls, then the answer) and
keeps a conversation history. Two rules keep per-user context safe there:

* **Identity comes from the runtime, never from the model.** The application says who
  the request is for (`context=` of a LangChain agent, the workflow `Context` or
  `feature_context(...)` in LlamaIndex); a tool argument the model writes is never read
  as a user id.
* **Context goes into every model call, never into the saved history.** The user's block
  is added to each request the model receives, so it is fresh and complete, while the
  checkpoints and memory that get stored hold no copy of the profile.

Everything below runs offline on the bundled sample Feast repository (SQLite online
store) with deterministic fake models that record exactly what they receive.""",
    ),
    (
        "code",
        """import tempfile
from pathlib import Path

from asahi_features import (EnricherConfig, FeastClient, FeatureEnricher, FeatureMonitor,
                            GuardedClient)
from asahi_features.sample_repo import build_sample_repo

TASK = "product_recommendation"
repo = build_sample_repo(Path(tempfile.mkdtemp(prefix="asahi_nb_")) / "feast_repo",
                         users=50, organizations=5)
client = GuardedClient(FeastClient(str(repo), "asahi"), timeout_ms=2000)
assert client.health_check()  # warm up: loads the Feast registry
monitor = FeatureMonitor()
enricher = FeatureEnricher(client, EnricherConfig(enabled_task_types=["general", TASK]),
                           monitor=monitor)


def activity(user):
    \"\"\"The user's "Recent activity" line: it differs between users, so it shows whose
    context a prompt holds.\"\"\"
    block = enricher.enrich("", user_id=user, task_type=TASK).feature_context
    return next(line for line in block.splitlines() if line.startswith("- Recent activity"))


print("u_0001:", activity("u_0001"))
print("u_0002:", activity("u_0002"))""",
    ),
    (
        "md",
        """## LangChain: a fake tool-calling chat model that records its input

`RecordingChat` stands in for a real chat model (`ChatAnthropic`, `ChatOpenAI`, ...). It
keeps every list of messages it receives in `received`, reports token usage under its
`model` name, and says how many profile lines it saw. With `tool_args` set, its first
reply to a question is a call of the features tool with those arguments.""",
    ),
    (
        "code",
        """import uuid
from dataclasses import dataclass
from typing import Any, List, Optional

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


@dataclass
class UserContext:
    \"\"\"What the application passes per request: `agent.invoke(..., context=...)`.\"\"\"

    user_id: Optional[str] = None


class RecordingChat(BaseChatModel):
    model: str = "fake-small"
    tool_args: Optional[dict] = None
    received: List[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording-fake"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.received.append(list(messages))
        if self.tool_args is not None and not isinstance(messages[-1], ToolMessage):
            call = {"name": "get_user_context", "args": self.tool_args, "id": uuid.uuid4().hex}
            reply = AIMessage("", tool_calls=[call])
        else:
            lines = [line for m in messages for line in m.text.splitlines() if line.startswith("- ")]
            reply = AIMessage(f"A tailored answer ({len(lines)} profile lines seen)." if lines
                              else "A generic answer (no profile seen).")
        words_in = sum(len(m.text.split()) for m in messages)  # words stand in for tokens
        reply.usage_metadata = {"input_tokens": words_in, "output_tokens": len(reply.text.split()),
                                "total_tokens": words_in + len(reply.text.split())}
        return ChatResult(generations=[ChatGeneration(message=reply)])""",
    ),
    (
        "md",
        """## `create_agent` with `FeatureContextMiddleware`

Two turns of one conversation for `u_0001`, on a checkpointer. The identity is the
run's `context`, typed by `context_schema`.""",
    ),
    (
        "code",
        """from langgraph.checkpoint.memory import InMemorySaver

from asahi_features.langchain import FeatureContextMiddleware

model = RecordingChat()
agent = create_agent(
    model,
    [],
    system_prompt="You are a helpful sales assistant.",
    middleware=[FeatureContextMiddleware(enricher, task_type=TASK)],
    context_schema=UserContext,
    checkpointer=InMemorySaver(),
)
thread = {"configurable": {"thread_id": "u_0001-chat"}}
for question in ["What should I buy next?", "Anything cheaper?"]:
    agent.invoke({"messages": [{"role": "user", "content": question}]}, thread,
                 context=UserContext(user_id="u_0001"))

print("=== what the model received on turn 2 ===")
for message in model.received[-1]:
    print(f"{message.type}: {message.text}")""",
    ),
    (
        "md",
        """The system prompt of the model call carries the user's block (after the agent's own
system prompt). The conversation the checkpointer saved is only the questions and
the model's answers: no system message, no copy of the profile. (A real model's answers
may of course mention what it learned; the block itself is never stored.)""",
    ),
    (
        "code",
        """saved = agent.get_state(thread).values["messages"]
for message in saved:
    print(f"{message.type:5s} {message.text[:80]}")
print("saved messages holding the context block:",
      sum("[Context from" in m.text for m in saved), "of", len(saved))""",
    ),
    (
        "md",
        """## `create_feature_tool`: the model cannot pick the user

The model below calls the tool with `{"user_id": "u_0002"}` (a prompt injection could
make a real model do that) while the request is for `u_0003`. The tool's schema has no
arguments; it drops what the model passes and answers for the runtime's identity.""",
    ),
    (
        "code",
        """from asahi_features.langchain import create_feature_tool

tool = create_feature_tool(enricher, task_type=TASK)
print("arguments the model sees:", tool.args)
tool_agent = create_agent(RecordingChat(tool_args={"user_id": "u_0002"}), [tool],
                          context_schema=UserContext)
out = tool_agent.invoke({"messages": [{"role": "user", "content": "What do you know about me?"}]},
                        context=UserContext(user_id="u_0003"))
call, answer = out["messages"][1], next(m for m in out["messages"] if isinstance(m, ToolMessage))
print("the model asked for:", call.tool_calls[0]["args"])
print("the tool answered:\\n" + answer.text)
print("u_0003's activity in the answer:", activity("u_0003") in answer.text)
print("u_0002's activity in the answer:", activity("u_0002") in answer.text)""",
    ),
    (
        "md",
        """## Scoring agent runs per model

`FeatureMonitorCallbackHandler` ties the middleware's enrichment to the agent's root
run; `record_run_quality(run_id, score)` scores it, counted for the model that answered
(read from the run, with the tokens of all its model calls). Here ten users are
answered by a "small" and ten by a "large" model, and a toy evaluator gives answers that
use the customer's profile a higher score.""",
    ),
    (
        "code",
        """from asahi_features.langchain import FeatureMonitorCallbackHandler

handler = FeatureMonitorCallbackHandler(monitor)
middleware = FeatureContextMiddleware(enricher, task_type=TASK)
agents = {name: create_agent(RecordingChat(model=name), [], middleware=[middleware],
                             context_schema=UserContext)
          for name in ["fake-small", "fake-large"]}
for n in range(1, 21):
    name = "fake-small" if n % 2 else "fake-large"
    run_id = uuid.uuid4()
    out = agents[name].invoke({"messages": [{"role": "user", "content": "Recommend something."}]},
                              {"callbacks": [handler], "run_id": run_id},
                              context=UserContext(user_id=f"u_{n:04d}"))
    handler.record_run_quality(run_id, 0.9 if "tailored" in out["messages"][-1].text else 0.4)

for name, stats in monitor.get_stats()["task_types"][TASK]["models"].items():
    print(f"{name}: scored {stats['scored']}, quality with features "
          f"{stats['quality_with_features']:.2f}, without {stats['quality_without_features']}, "
          f"input tokens per request {stats['input_tokens_per_request']['with_features']:.1f}")""",
    ),
    (
        "md",
        """`u_0007` is one of the sample repository's stale users (its features are days old),
so its run got no block: the enricher refused stale data, the agent still answered, and
the score counts as "without features" for the model that answered it.

## LlamaIndex: `FunctionAgent` with `FeatureMemoryBlock`

`FeatureMemoryBlock` is a block of the agent's `Memory`: every LLM call of every turn
carries the user's block, refreshed at each call and never truncated by the memory's
token limit. The LLM is LlamaIndex's `MockFunctionCallingLLM` with a response generator
that records the messages it receives. The block reaches the LLM as a `<memory>` system
message; what the memory stores is only the conversation.""",
    ),
    (
        "code",
        """import warnings

from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import Memory
from llama_index.core.workflow import Context

from asahi_features.llama_index import FeatureMemoryBlock

warnings.filterwarnings("ignore", category=DeprecationWarning)  # pydantic noise from workflows


def recording_llm(calls):
    \"\"\"An LLM double: records each call's messages, says how many profile lines it saw.\"\"\"

    def answer(messages, **kwargs):
        text = "\\n".join(f"{m.role.value}: {m.content or ''}" for m in messages)
        calls.append(text)
        lines = [line for line in text.splitlines() if line.startswith("- ")]
        return ChatMessage(role="assistant", content=f"A tailored answer ({len(lines)} profile lines seen)."
                           if lines else "A generic answer (no profile seen).")

    return MockFunctionCallingLLM(response_generator=answer, is_chat_model=True)


calls = []
li_agent = FunctionAgent(llm=recording_llm(calls), tools=[], system_prompt="You are a shop assistant.")
block = FeatureMemoryBlock(enricher, user_id="u_0004", task_type=TASK)
memory = Memory.from_defaults(session_id="u_0004-chat", memory_blocks=[block], token_limit=2000)
await li_agent.run("What should I buy next?", memory=memory)
await li_agent.run("And something cheaper?", memory=memory)
print("=== what the LLM received on turn 2 ===")
print(calls[-1])
print(f"\\nLLM calls carrying the block: {sum('[Context from' in c for c in calls)}/{len(calls)}")
stored = await memory.aget_all()
print("messages stored in the memory:", len(stored), "| holding the block:",
      sum("[Context from" in (m.content or "") for m in stored))""",
    ),
    (
        "md",
        """## `AgentWorkflow`: the identity in the workflow `Context`

`set_workflow_identity` stores the user in the workflow's `Context`, which every step
and tool of the run reads; one shared block (no identity of its own) reads it, and so
does the LlamaIndex `create_feature_tool`, whose only argument is the question.""",
    ),
    (
        "code",
        """from asahi_features.llama_index import create_feature_tool as create_li_tool
from asahi_features.llama_index import set_workflow_identity

shared = FeatureMemoryBlock(enricher, task_type=TASK)
shop = FunctionAgent(name="shop", description="Shop assistant", llm=recording_llm(calls), tools=[])
workflow = AgentWorkflow(agents=[shop], root_agent="shop")
ctx = Context(workflow)
await set_workflow_identity(ctx, user_id="u_0005")
await workflow.run("Hello!", ctx=ctx, memory=Memory.from_defaults(session_id="wf", memory_blocks=[shared]))
print("the workflow's LLM call carried u_0005's activity:", activity("u_0005") in calls[-1])

li_tool = create_li_tool(enricher, task_type=TASK)
print("tool arguments:", list(li_tool.metadata.get_parameters_dict()["properties"]))
print((await li_tool.acall(ctx=ctx, question="what do I like?")).content)""",
    ),
    (
        "md",
        """## 20 concurrent runs, 20 users

Twenty agent runs at once over one shared agent and one shared middleware (LangChain)
or one shared memory block (LlamaIndex), each for its own user. Each question names
its user, so every recorded model call can be checked: it must hold its own user's
activity line and no other user's.""",
    ),
    (
        "code",
        """import asyncio

from asahi_features.llama_index import feature_context

users = [f"u_{n:04d}" for n in range(21, 41)]
lines = {u: activity(u) for u in users}
assert len(set(lines.values())) == len(users)  # each user's line is unique


def clean_runs(received):
    \"\"\"Users whose every model call held their own line and no other user's.\"\"\"
    ok = {u: True for u in users}
    for user, text in received:
        others = [o for o in users if o != user and lines[o] in text]
        ok[user] = ok[user] and lines[user] in text and not others
    return sum(ok.values())


# LangChain: one agent; the model calls the features tool, then answers
lc_model = RecordingChat(tool_args={})
lc_agent = create_agent(lc_model, [tool], middleware=[middleware], context_schema=UserContext)
await asyncio.gather(*(lc_agent.ainvoke({"messages": [{"role": "user", "content": f"Hi, I am {u}."}]},
                                        context=UserContext(user_id=u)) for u in users))
lc_seen = [(next(x for x in m if x.type == "human").text.split("I am ")[1][:6],
            "\\n".join(x.text for x in m)) for m in lc_model.received]
print(f"LangChain: {len(lc_seen)} model calls; "
      f"{clean_runs(lc_seen)}/{len(users)} runs saw only their own user's context")

# LlamaIndex: one agent, one shared block; feature_context entered before agent.run()
li_calls = []
crowd = FunctionAgent(llm=recording_llm(li_calls), tools=[])


async def li_run(user):
    with feature_context(user_id=user):
        await crowd.run(f"Hi, I am {user}.", memory=Memory.from_defaults(
            session_id=f"s-{user}", memory_blocks=[shared]))


await asyncio.gather(*(li_run(u) for u in users))
li_seen = [(c.split("I am ")[1][:6], c) for c in li_calls]
print(f"LlamaIndex: {len(li_seen)} LLM calls; "
      f"{clean_runs(li_seen)}/{len(users)} runs saw only their own user's context")
client.close()""",
    ),
]


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """The notebook of ``cells`` (not executed)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells
    ]
    return nb


def build(name: str, cells: list[tuple[str, str]]) -> None:
    """Execute the notebook (in this directory, a 10-minute budget) and store it with outputs."""
    from nbclient import NotebookClient

    nb = notebook(cells)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    nbformat.write(nb, HERE / name)


def stale() -> list[str]:
    """The stored notebooks whose cells (kind and source) differ from the sources here."""
    out = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        stored = nbformat.read(path, as_version=4) if path.exists() else None
        wanted = [(c.cell_type, c.source) for c in notebook(cells).cells]
        if stored is None or [(c.cell_type, c.source) for c in stored.cells] != wanted:
            out.append(name)
    return out


NOTEBOOKS = {
    "01_langchain_quickstart.ipynb": LANGCHAIN,
    "02_llamaindex.ipynb": LLAMA_INDEX,
    "03_monitoring.ipynb": MONITORING,
    "04_agents.ipynb": AGENTS,
}

if __name__ == "__main__":
    import sys

    if "--check" in sys.argv:
        names = stale()
        for name in names:
            print(f"{name} is stale: run python notebooks/build_notebooks.py")
        raise SystemExit(1 if names else 0)
    only = [a for a in sys.argv[1:] if a.endswith(".ipynb")]
    for filename, cells in NOTEBOOKS.items():
        if not only or filename in only:
            build(filename, cells)
            print("wrote", filename, "(executed)")
