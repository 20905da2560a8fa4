"""Who the current request is for: :func:`feature_context` over a ContextVar."""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Dict, List, Optional

from ..models import EnrichmentResult

logger = logging.getLogger(__name__)

_UNSET: Any = object()


@dataclass(slots=True)
class FeatureRequest:
    """Who the current request is for, and what the postprocessor did for it.

    Returned by :func:`feature_context` (it is the context manager itself); ``results``
    fills in as the postprocessor runs (one entry per enrichment, e.g. one per chat
    turn), so the caller can read the enrichment ids afterwards without shared state.
    """

    user_id: Optional[str] = None
    organization_id: Optional[str] = None
    task_type: Optional[str] = None
    context: Optional[Dict[str, Any]] = None
    results: List[EnrichmentResult] = field(default_factory=list)
    _token: Optional[Token[Optional[FeatureRequest]]] = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def last_result(self) -> Optional[EnrichmentResult]:
        """The most recent enrichment of this request, if any."""
        return self.results[-1] if self.results else None

    @property
    def enrichment_ids(self) -> List[str]:
        """The ids of every enrichment made for this request, oldest first."""
        return [r.enrichment_id for r in self.results]

    async def bind(self, run: Any) -> None:
        """Put this request's identity in a workflow run's ``Context`` store.

        A handler created by ``agent.run(...)`` *before* the ``with feature_context(...)``
        block keeps the context it was created in, so the block cannot reach its steps;
        binding it writes the identity where every step, tool and memory read of the run
        looks first (:func:`set_workflow_identity`)::

            handler = agent.run("Hi", memory=memory)       # created outside the block
            with feature_context(user_id="u_1001") as request:
                await request.bind(handler)                # before awaiting it
                response = await handler

        Bind before anything awaited lets the run start reading. The enrichments made in
        the run are then not listed in :attr:`results` (the steps run in the run's own
        context); the events and the monitor see them.

        Args:
            run: a ``WorkflowHandler`` (its ``ctx`` is used) or a workflow ``Context``.
        """
        from .workflow import set_workflow_identity

        ctx = getattr(run, "ctx", None) or run
        await set_workflow_identity(
            ctx,
            user_id=self.user_id,
            organization_id=self.organization_id,
            task_type=self.task_type,
            context=self.context,
        )

    def __enter__(self) -> FeatureRequest:
        if self._token is not None:
            raise RuntimeError("this feature_context(...) block is already active")
        self._token = _CURRENT_REQUEST.set(self)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            _CURRENT_REQUEST.reset(token)


_CURRENT_REQUEST: ContextVar[Optional[FeatureRequest]] = ContextVar(
    "asahi_features_llama_index_request", default=None
)


def feature_context(
    user_id: Optional[str] = _UNSET,
    organization_id: Optional[str] = _UNSET,
    task_type: Optional[str] = _UNSET,
    context: Optional[Dict[str, Any]] = _UNSET,
) -> FeatureRequest:
    """Set the identity of the current request for :class:`FeatureContextPostprocessor`.

    Use it as a context manager around the engine call. The values live in a
    :class:`~contextvars.ContextVar`: each thread and each asyncio task sees only its
    own, so a single engine can be shared by concurrent requests. Nested blocks inherit
    the arguments they do not pass from the enclosing block.

    Args:
        user_id: the user the request is for.
        organization_id: the organisation the request is for.
        task_type: overrides the postprocessor's ``task_type`` for this request.
        context: request context passed on to :meth:`FeatureEnricher.enrich`.

    Returns:
        The :class:`FeatureRequest`, a context manager whose ``with ... as`` target is
        itself; its ``results`` list the enrichments made inside the block.

    Example:
        >>> with feature_context(user_id="u_1001") as request:  # doctest: +SKIP
        ...     response = query_engine.query("Recommend a jacket")
        >>> request.enrichment_ids  # doctest: +SKIP
        ['3f2a...']
    """
    outer = _CURRENT_REQUEST.get()
    if outer is None:
        request = FeatureRequest(
            user_id=None if user_id is _UNSET else user_id,
            organization_id=None if organization_id is _UNSET else organization_id,
            task_type=None if task_type is _UNSET else task_type,
            context=None if context is _UNSET else context,
        )
    else:
        request = FeatureRequest(
            user_id=outer.user_id if user_id is _UNSET else user_id,
            organization_id=(
                outer.organization_id if organization_id is _UNSET else organization_id
            ),
            task_type=outer.task_type if task_type is _UNSET else task_type,
            context=outer.context if context is _UNSET else context,
        )
    return request


def current_feature_request() -> Optional[FeatureRequest]:
    """The :class:`FeatureRequest` set by the innermost active :func:`feature_context`."""
    return _CURRENT_REQUEST.get()
