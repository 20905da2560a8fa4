"""How the client resolves a request (entity type, feature names or a feature service)
into a read plan, against what it knows of the registry; unknown names re-read the
registry (rate-limited) and names that were served before are drift, not mistakes."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...errors import FeatureConfigError
from ..entity_keys import COMPOUND_SEPARATOR, FEATURE_SERVICE_PREFIX, canonical_entity_type
from ..naming import close_matches
from .drift import DriftTracker
from .registry import EntityInfo, Plan, RegistryView, ServiceInfo, make_plan

__all__ = ["PlanResolver"]


class PlanResolver:
    """Resolution for :class:`~.client.FeastClient` (which provides the registry)."""

    project: str
    _plans: Dict[Tuple[str, Tuple[str, ...]], Plan]
    _lock: Any
    _drift: DriftTracker

    def _registry_view(self) -> RegistryView:
        raise NotImplementedError

    def _auto_refresh(self) -> bool:
        raise NotImplementedError

    def _refresh_note(self, refreshed: bool) -> str:
        raise NotImplementedError

    def _entity(self, view: RegistryView, entity_type: str) -> Optional[EntityInfo]:
        return view.entities.get(entity_type)

    def _unknown_entity(
        self, view: RegistryView, entity_type: str, note: str = ""
    ) -> FeatureConfigError:
        return FeatureConfigError(
            f"unknown entity type {entity_type!r} in Feast project {self.project!r}{note}",
            view.entities,
            kind="entity types",
            suggestions=close_matches([entity_type], view.entities),
        )

    def _plan(self, entity_type: str, feature_names: Sequence[str]) -> Plan:
        key = (entity_type, tuple(feature_names))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if not feature_names:
            raise FeatureConfigError(
                f"no feature names requested for entity type {entity_type!r}",
                self._available(entity_type),
            )
        canonical = canonical_entity_type(entity_type)
        if feature_names[0].startswith(FEATURE_SERVICE_PREFIX):
            plan = self._service_plan(canonical, feature_names)
        else:
            info, resolved = self._resolve(canonical, feature_names)
            plan = make_plan(info, resolved)
            self._drift.served(canonical, resolved)
        with self._lock:
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _resolve(
        self, entity_type: str, feature_names: Sequence[str]
    ) -> Tuple[EntityInfo, List[Tuple[str, str]]]:
        view = self._registry_view()
        info = self._entity(view, entity_type)
        resolved: List[Tuple[str, str]] = []
        unknown: List[str] = []
        if info is not None:
            resolved, unknown = info.resolver.try_resolve(feature_names)
        if info is None or unknown:
            refreshed = self._auto_refresh()  # a view applied since we last looked?
            note = self._refresh_note(refreshed)
            if refreshed:
                view = self._registry_view()
                info = self._entity(view, entity_type)
            if info is None:
                if self._drift.was_served(entity_type, feature_names):
                    raise self._drift.gone(entity_type, feature_names, " with their entity")
                raise self._unknown_entity(view, entity_type, note)
            resolved, unknown = info.resolver.try_resolve(feature_names)
            if unknown:
                if self._drift.was_served(entity_type, unknown):
                    raise self._drift.gone(entity_type, unknown, available=info.resolver.available)
                raise info.resolver.unknown_error(unknown, note)
        return info, resolved

    def _service(self, name: str) -> ServiceInfo:
        """The feature service ``name`` (re-reading the registry, rate-limited, when it is
        unknown).

        Raises:
            FeatureConfigError: no such service (close matches first).
        """
        view = self._registry_view()
        service = view.services.get(name)
        if service is None:
            refreshed = self._auto_refresh()
            if refreshed:
                view = self._registry_view()
                service = view.services.get(name)
            if service is None:
                asked = FEATURE_SERVICE_PREFIX + name
                if self._drift.was_served("*", [asked]):
                    raise self._drift.gone("*", [asked])
                raise FeatureConfigError(
                    f"unknown feature service {name!r} in Feast project {self.project!r} "
                    f"(or its features are not all of one entity type)"
                    f"{self._refresh_note(refreshed)}",
                    sorted(view.services),
                    kind="feature services",
                    suggestions=close_matches([name], view.services),
                )
        return service

    def _service_plan(self, entity_type: str, feature_names: Sequence[str]) -> Plan:
        name = feature_names[0][len(FEATURE_SERVICE_PREFIX) :]
        if len(feature_names) > 1:
            raise FeatureConfigError(
                f"a feature service ({feature_names[0]!r}) is asked for alone; "
                f"got {list(feature_names)!r}",
                [feature_names[0]],
            )
        service = self._service(name)
        if service.entity_type != entity_type:
            raise FeatureConfigError(
                f"feature service {name!r} serves entity type {service.entity_type!r}, "
                f"not {entity_type!r}",
                [service.entity_type],
                kind="entity types",
            )
        info = self._registry_view().entities[service.entity_type]
        self._drift.served("*", [(feature_names[0], feature_names[0])])
        return make_plan(info, [(ref, ref) for ref in service.refs], service.service)

    def feature_service_entity_type(self, name: str) -> str:
        """The entity type whose ids feature service ``name`` reads (``driver``, or a
        compound type such as ``merchant+user``).

        Raises:
            FeatureConfigError: no such service (the message suggests close matches).
            FeatureStoreUnavailableError: the registry cannot be read.
        """
        return self._service(name).entity_type

    def request_fields(self, entity_type: str, feature_names: Sequence[str]) -> Tuple[str, ...]:
        """The request-data fields that reading ``feature_names`` needs (the inputs of
        on-demand views with request sources), in order; empty for most reads.

        Raises:
            FeatureConfigError: unknown entity type or feature.
        """
        plan = self._plan(entity_type, feature_names)
        parts = len(canonical_entity_type(entity_type).split(COMPOUND_SEPARATOR))
        return plan.row_columns[parts:]

    def _available(self, entity_type: str) -> List[str]:
        info = self._registry_view().entities.get(entity_type)
        return info.resolver.available if info else []
