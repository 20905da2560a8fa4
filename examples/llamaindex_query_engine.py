"""Feature-enriched LlamaIndex query and chat engines, fully offline.

Builds the sample Feast repository (SQLite online store) in a temporary directory, puts
a FeatureContextPostprocessor last in a query engine and a context chat engine, records
every enrichment in a FeatureMonitor through LlamaIndex instrumentation, then scores
the answers with SemanticSimilarityEvaluator and hands the scores to the monitor.

Nothing is downloaded: the index uses MockEmbedding, the LLM is MockLLM (which echoes
its prompt, so you see exactly what a real model would receive) and the evaluator uses
a tiny deterministic bag-of-words embedding defined below.

Run: python examples/llamaindex_query_engine.py  (needs the [feast,llama-index] extras)
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import tempfile
import warnings
import zlib
from typing import Any, List

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.evaluation import BatchEvalRunner, SemanticSimilarityEvaluator
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor

from asahi_features.enricher import FeatureEnricher
from asahi_features.guard import GuardedClient
from asahi_features.llama_index import (
    FeatureContextPostprocessor,
    FeatureMonitorEventHandler,
    feature_context,
)
from asahi_features.monitor import FeatureMonitor
from asahi_features.sample_repo import SAMPLE_TASK_FEATURES, build_sample_repo
from asahi_features.settings import EnricherConfig, MonitorConfig
from asahi_features.stores.feast_store import FeastClient


class BagOfWordsEmbedding(BaseEmbedding):
    """Deterministic offline embedding for the evaluator (MockEmbedding gives every text
    the same vector, which makes every similarity 1.0)."""

    def _vector(self, text: str) -> List[float]:
        vec = [0.0] * 256
        for token in re.findall(r"[a-z0-9]+", text.lower()):
            vec[zlib.crc32(token.encode()) % 256] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._vector(text)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    Settings.llm = MockLLM()  # no max_tokens: echoes the prompt
    Settings.embed_model = MockEmbedding(embed_dim=8)

    with tempfile.TemporaryDirectory() as tmp:
        repo = build_sample_repo(tmp, users=40, organizations=5)
        feast_client = FeastClient(str(repo), "asahi")
        feast_client.get_features("u_0001", "user", ["tier"])  # warm-up: loads the registry
        client = GuardedClient(feast_client, timeout_ms=200)
        monitor = FeatureMonitor(MonitorConfig(holdout_fraction={"product_recommendation": 0.3}))
        enricher = FeatureEnricher(
            client,
            # the sample task map: product_recommendation with budget and demographics
            EnricherConfig(
                enabled_task_types=["general", "product_recommendation"],
                task_features=SAMPLE_TASK_FEATURES,
            ),
            monitor=monitor,
        )
        handler = FeatureMonitorEventHandler(monitor).attach()  # root dispatcher

        index = VectorStoreIndex.from_documents(
            [
                Document(text="Our running shoes come in road and trail versions."),
                Document(text="Jackets: rain shell, down parka, fleece."),
            ]
        )
        post = FeatureContextPostprocessor(enricher, task_type="product_recommendation")
        engine = index.as_query_engine(
            # cut-offs and re-rankers first, the feature postprocessor LAST
            node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.2), post],
        )

        # 1. one query: the echoed prompt shows the feature block above the documents
        #    (the monitor holds 30% of users out as a control group: pick one it does not)
        first = next(
            f"u_{n:04d}"
            for n in range(1, 41)
            if not monitor.is_held_out("product_recommendation", f"u_{n:04d}")
        )
        with feature_context(user_id=first) as request:
            response = engine.query("What should I buy next?")
        print("=== prompt received by the LLM (MockLLM echoes it) ===")
        print(str(response))
        print("reason:", request.last_result.reason.value if request.last_result else None)

        # 2. a context chat engine shares the same postprocessor
        chat = index.as_chat_engine(chat_mode=ChatMode.CONTEXT, node_postprocessors=[post])
        with feature_context(user_id="u_0002", task_type="general"):
            reply = chat.chat("Hi! Anything for me?")
        print("\n=== chat engine: feature lines in the prompt ===")
        print("\n".join(line for line in str(reply).splitlines() if line.startswith("- ")))

        # 3. many users at once over one engine: each prompt holds its own user only
        async def ask(n: int) -> Any:
            with feature_context(user_id=f"u_{n:04d}"):
                return await engine.aquery(f"Recommendation for customer {n}?")

        users = list(range(3, 23))
        queries = [f"Recommendation for customer {n}?" for n in users]
        responses = await asyncio.gather(*(ask(n) for n in users))
        mixed = [
            n
            for n, r in zip(users, responses, strict=True)
            if any(f"customer {m}?" in str(r) for m in users if m != n)
        ]
        print(f"\n{len(responses)} concurrent queries answered; prompts mixing users: {mixed}")

        # 4. evaluate the answers and record the scores as quality in the monitor
        runner = BatchEvalRunner({"similarity": SemanticSimilarityEvaluator(BagOfWordsEmbedding())})
        references = ["purchase history browsing preferences budget demographics"] * len(users)
        # LlamaIndex annotates ``reference`` as a dict but reads it per response, as a list
        results = await runner.aevaluate_responses(
            queries=queries,
            responses=responses,  # type: ignore[arg-type]
            reference=references,  # type: ignore[arg-type]
        )
        record = handler.record_evaluation(results, queries=queries)
        print(f"recorded {record.recorded} quality scores ({record.unmatched} unmatched)")

        stats = monitor.get_stats()
        print("\n=== monitor ===")
        for key in (
            "total_enrichments",
            "successful_enrichments",
            "held_out_enrichments",
            "quality_with_features",
            "quality_without_features",
            "feature_store_availability_pct",
        ):
            print(f"{key}: {stats[key]}")
        handler.detach()
        client.close()


if __name__ == "__main__":
    asyncio.run(main())
