"""LangChain example: enrich prompts from the sample Feast repo, monitor quality offline.

Runs fully offline: it builds the sample Feast repository (SQLite) in a temporary
directory (or uses ``--repo DIR``), and answers with a small deterministic fake chat
model. To use a real model, name its class and arguments::

    ASAHI_CHAT_MODEL=langchain_openai:ChatOpenAI \\
    ASAHI_CHAT_MODEL_KWARGS='{"model": "gpt-4o-mini"}' \\
    python examples/langchain_chain.py

(the package providing the class must be installed; its own API key variables apply).

Usage: python examples/langchain_chain.py [--repo DIR] [--users 200]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from langchain_core.language_models import BaseChatModel, SimpleChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langsmith.schemas import Example

from asahi_features import (
    EnricherConfig,
    FeastClient,
    FeatureEnricher,
    FeatureMonitor,
    GuardedClient,
    MonitorConfig,
)
from asahi_features.langchain import (
    FeatureEnrichmentRunnable,
    FeatureMonitorCallbackHandler,
    evaluate_offline,
)
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES, build_sample_repo, user_id


class ProfileAwareFakeChat(SimpleChatModel):
    """Deterministic stand-in for an LLM: it tailors the answer when it sees the tier."""

    @property
    def _llm_type(self) -> str:
        return "profile-aware-fake"

    def _call(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> str:
        text = "\n".join(str(m.content) for m in messages)
        for tier in ("platinum", "gold", "silver", "bronze", "free"):
            if f"Customer tier: {tier}" in text:
                return f"As a {tier} customer, the {tier} plan add-ons suit you best."
        return "Our most popular plan suits most customers."


def chat_model() -> BaseChatModel:
    """The model named by ASAHI_CHAT_MODEL (``module:Class``), else the fake one."""
    spec = os.environ.get("ASAHI_CHAT_MODEL")
    if not spec:
        return ProfileAwareFakeChat()
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise SystemExit(f"ASAHI_CHAT_MODEL must look like 'module:Class', got {spec!r}")
    kwargs: Dict[str, Any] = json.loads(os.environ.get("ASAHI_CHAT_MODEL_KWARGS", "{}"))
    model: BaseChatModel = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, help="an existing sample repo (else a temp one)")
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()

    repo = args.repo or build_sample_repo(
        Path(tempfile.mkdtemp(prefix="asahi_lc_")) / "repo", users=args.users
    )
    feast_client = FeastClient(str(repo), "asahi")
    feast_client.get_features(user_id(1), "user", ["tier"])  # warm up: registry, SQLite
    client = GuardedClient(feast_client, timeout_ms=500)
    monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"general": 0.3}))
    # The sample task map (general: tier, preferences, preferred_language) rather than the
    # defaults (spec table 3.5 only): the sample repository serves these extra features.
    config = EnricherConfig(task_features=SAMPLE_TASK_FEATURES)
    enricher = FeatureEnricher(client, config, monitor=monitor)
    llm = chat_model()

    # 1. runnable | llm: the enriched prompt string goes straight to the model.
    chain = FeatureEnrichmentRunnable(enricher) | llm
    answer = chain.invoke(
        "Which plan should I pick?", config={"configurable": {"user_id": user_id(1)}}
    )
    print("runnable | llm            ->", answer.content)

    # 2. runnable | template | llm: the block fills a {feature_context} slot.
    template = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a helpful sales assistant.\n{feature_context}"),
            ("human", "{prompt}"),
        ]
    )
    templated = FeatureEnrichmentRunnable(enricher, output="dict") | template | llm
    answer = templated.invoke(
        {"prompt": "Which plan should I pick?"},
        config={"configurable": {"user_id": user_id(2)}},
    )
    print("runnable | template | llm ->", answer.content)

    # 3. batch: one Feast read for all inputs, identity per input through the config.
    handler = FeatureMonitorCallbackHandler(monitor)
    configs: List[Any] = [
        {"configurable": {"user_id": user_id(n)}, "callbacks": [handler]} for n in range(3, 8)
    ]
    answers = chain.batch(["Which plan should I pick?"] * 5, configs)
    print("batch of 5                ->", [str(a.content)[:24] + "..." for a in answers])

    # 4. a quality score for one run lands on its enrichment.
    run_id = uuid.uuid4()
    chain.invoke(
        "Anything new for me?",
        config={"configurable": {"user_id": user_id(9)}, "callbacks": [handler], "run_id": run_id},
    )
    print("scored enrichments        ->", handler.record_run_quality(run_id, 0.9))

    # 5. offline evaluation (langsmith.evaluate, no account, no network).
    def tier_in_answer(run: Any, example: Any) -> Dict[str, Any]:
        tier = example.outputs["tier"]
        answer = str(run.outputs.get("output", ""))
        return {"key": "tailored", "score": 1.0 if tier and tier in answer else 0.3}

    users = [user_id(n) for n in range(10, 70)]
    tiers = {u: client.get_features(u, "user", ["tier"]).features.get("tier", "") for u in users}
    data = [
        Example(
            id=uuid.uuid4(),
            dataset_id=uuid.uuid4(),
            inputs={"prompt": "Which plan should I pick?", "user_id": u},
            outputs={"tier": tiers[u]},
        )
        for u in users
    ]
    target = FeatureEnrichmentRunnable(enricher) | llm | RunnableLambda(lambda m: m.content)
    evaluate_offline(target, data, [tier_in_answer], monitor)

    stats = monitor.get_stats()
    general = stats["task_types"]["general"]
    print(
        "monitor                   ->",
        json.dumps(
            {
                "total_enrichments": stats["total_enrichments"],
                "quality_with_features": stats["quality_with_features"],
                "quality_without_features": stats["quality_without_features"],
                "held_out": general["held_out"],
                "quality_delta": general["quality_delta"],
            }
        ),
    )
    client.close()


if __name__ == "__main__":
    main()
