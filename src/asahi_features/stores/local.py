"""LocalFeatureStore: a JSON file backed store for development and tests.

File format (top-level keys are entity types, then entity ids)::

    {"user": {"u_1001": {"updated_at": "2026-11-24T10:00:00Z",
                          "features": {"purchase_history": ["shoes", "jacket"], "tier": "gold"},
                          "feature_timestamps": {"tier": "2026-11-01T00:00:00Z"}}},
     "organization": {"acme": {"updated_at": "...", "features": {"brand_voice": "playful"}}}}

``feature_timestamps`` is optional and overrides ``updated_at`` per feature. A timestamp
that is not an ISO-8601 string makes the file invalid; one at or before the epoch, or far
in the future, parses but gives an unknown age (see :data:`~.base.UNKNOWN_AGE`), so the
enricher drops the feature as stale unless ``enricher.unknown_age: keep``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import (
    FeatureConfigError,
    FeatureStoreDataError,
    FeatureStoreUnavailableError,
    cap_message,
    excerpt,
)
from ..models import FeatureStatus, FeatureVector, utc_now
from .base import BaseFeatureStore, age_of, parse_timestamp

if TYPE_CHECKING:
    from ..settings import FeatureStoreSettings

__all__ = ["LocalFeatureStore"]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class _Entity:
    features: Dict[str, Any]
    timestamps: Dict[str, datetime]


@dataclass(frozen=True)
class _Snapshot:
    signature: Tuple[int, int, int]
    entities: Dict[str, Dict[str, _Entity]]
    feature_names: Dict[str, frozenset[str]]


_JSON_SKIP_STRINGS = r'"[^"\\]*(?:\\.[^"\\]*)*"'
"""A JSON string literal (skipped when looking for brackets or numbers outside strings)."""
_JSON_BRACKETS = re.compile(_JSON_SKIP_STRINGS + r"|[\[\]{}]")


def _line_column(raw: str, pos: int) -> str:
    line = raw.count("\n", 0, pos) + 1
    column = pos - (raw.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column}"


def _deepest(raw: str) -> Tuple[int, int]:
    """(depth, position) of the most deeply nested bracket of a JSON text (linear scan)."""
    depth = best = best_pos = 0
    for match in _JSON_BRACKETS.finditer(raw):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > best:
                best, best_pos = depth, match.start()
        elif char in "]}":
            depth -= 1
    return best, best_pos


def _long_number(raw: str) -> Optional[int]:
    """Position of the first number outside strings longer than Python converts."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)() or 4300  # 3.10.7+
    pattern = re.compile(_JSON_SKIP_STRINGS + rf"|-?\d{{{limit + 1},}}")
    for match in pattern.finditer(raw):
        if not match.group().startswith('"'):
            return match.start()
    return None


def _decode_json(raw: str, path: Path) -> Any:
    """``json.loads`` whose every failure is a FeatureStoreDataError naming the file and
    the position (line and column) of the problem."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FeatureStoreDataError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        depth, pos = _deepest(raw)
        raise FeatureStoreDataError(
            f"{path}: invalid JSON: nested too deeply for the parser ({depth:,} levels; the "
            f"deepest at {_line_column(raw, pos)})"
        ) from None
    except ValueError as exc:  # an integer with more digits than Python converts
        number = _long_number(raw)
        where = f" at {_line_column(raw, number)}" if number is not None else ""
        raise FeatureStoreDataError(
            f"{path}: invalid JSON{where}: {cap_message(str(exc), 200)}"
        ) from None


def _parse_time(value: Any, where: str, path: Path) -> datetime:
    if not isinstance(value, str):
        raise FeatureStoreDataError(
            f"{path}: {where} must be an ISO-8601 timestamp string, got {type(value).__name__}"
        )
    parsed = parse_timestamp(value)
    if parsed is None:
        raise FeatureStoreDataError(f"{path}: {where} is not an ISO-8601 timestamp: {value!r}")
    return parsed


class LocalFeatureStore(BaseFeatureStore):
    """JSON-file backed store for development and testing.

    The file is re-read whenever it changes on disk (size, mtime or inode), so edits
    show up without a restart. Reads are thread-safe.

    Args:
        data_path: the JSON file (format in the module docstring and the README).
        clock: returns "now" as an aware datetime; tests pass a controllable clock.

    Raises:
        FeatureConfigError: a requested feature name exists for no entity of that type.
        FeatureStoreDataError: the file is not valid JSON or not in the expected shape
            (the message names the file and the position of the problem).
        FeatureStoreUnavailableError: the file cannot be read.

    Example:
        >>> store = LocalFeatureStore(Path("examples/sample_features.json"))
        >>> store.get_features("u_1001", "user", ["tier"]).features
        {'tier': 'gold'}
    """

    source = "local"

    def __init__(self, data_path: Path, *, clock: Optional[Clock] = None) -> None:
        self.data_path = Path(data_path)
        self._clock: Clock = clock or utc_now
        self._lock = threading.Lock()
        self._snapshot: Optional[_Snapshot] = None

    @classmethod
    def from_settings(cls, settings: FeatureStoreSettings) -> LocalFeatureStore:
        """Build from the ``feature_store.local`` section."""
        assert settings.local is not None
        return cls(settings.local.data_path)

    def __repr__(self) -> str:
        return f"LocalFeatureStore(data_path={str(self.data_path)!r})"

    # -- loading -----------------------------------------------------------------------

    def _signature(self) -> Tuple[int, int, int]:
        try:
            st = os.stat(self.data_path)
        except OSError as exc:
            raise FeatureStoreUnavailableError(
                f"cannot read feature file {self.data_path}: {exc.strerror or exc}"
            ) from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> _Snapshot:
        signature = self._signature()
        snapshot = self._snapshot
        if snapshot is not None and snapshot.signature == signature:
            return snapshot
        with self._lock:
            snapshot = self._snapshot
            if snapshot is not None and snapshot.signature == signature:
                return snapshot
            snapshot = self._parse(signature)
            self._snapshot = snapshot
            return snapshot

    def _parse(self, signature: Tuple[int, int, int]) -> _Snapshot:
        path = self.data_path
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FeatureStoreUnavailableError(
                f"cannot read feature file {path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError as exc:
            raise FeatureStoreDataError(
                f"{path}: not UTF-8 text (byte offset {exc.start})"
            ) from None
        data = _decode_json(raw, path)
        if not isinstance(data, dict):
            raise FeatureStoreDataError(
                f"{path}: the top level must be an object of entity types, "
                f"got {type(data).__name__}"
            )
        entities: Dict[str, Dict[str, _Entity]] = {}
        names: Dict[str, frozenset[str]] = {}
        for entity_type, rows in data.items():
            if not isinstance(rows, dict):
                raise FeatureStoreDataError(
                    f"{path}: {excerpt(entity_type)} must be an object of entity ids"
                )
            parsed: Dict[str, _Entity] = {}
            seen: set[str] = set()
            for entity_id, row in rows.items():
                parsed[entity_id] = self._parse_entity(entity_type, entity_id, row, path)
                seen.update(parsed[entity_id].features)
            entities[entity_type] = parsed
            names[entity_type] = frozenset(seen)
        return _Snapshot(signature, entities, names)

    @staticmethod
    def _parse_entity(entity_type: str, entity_id: str, row: Any, path: Path) -> _Entity:
        where = f"{entity_type}.{entity_id}"
        if not isinstance(row, dict):
            raise FeatureStoreDataError(f"{path}: {where} must be an object")
        unknown = set(row) - {"updated_at", "features", "feature_timestamps"}
        if unknown:
            raise FeatureStoreDataError(
                f"{path}: {where} has unknown key(s) {sorted(unknown)}; "
                f"allowed: updated_at, features, feature_timestamps"
            )
        features = row.get("features", {})
        if not isinstance(features, dict):
            raise FeatureStoreDataError(f"{path}: {where}.features must be an object")
        if "updated_at" not in row:
            raise FeatureStoreDataError(f"{path}: {where}.updated_at is required")
        updated = _parse_time(row["updated_at"], f"{where}.updated_at", path)
        overrides = row.get("feature_timestamps", {})
        if not isinstance(overrides, dict):
            raise FeatureStoreDataError(f"{path}: {where}.feature_timestamps must be an object")
        timestamps = {name: updated for name in features}
        for name, value in overrides.items():
            timestamps[name] = _parse_time(value, f"{where}.feature_timestamps.{name}", path)
        return _Entity(features=features, timestamps=timestamps)

    # -- reads -------------------------------------------------------------------------

    def _check_names(self, snap: _Snapshot, entity_type: str, feature_names: List[str]) -> None:
        available = snap.feature_names.get(entity_type)
        if available is None:
            raise FeatureConfigError(
                f"unknown entity type {entity_type!r} in {self.data_path}",
                snap.entities.keys(),
                kind="entity types",
            )
        unknown = [name for name in feature_names if name not in available]
        if unknown:
            raise FeatureConfigError(
                f"unknown feature(s) {', '.join(map(repr, unknown))} for entity type "
                f"{entity_type!r}",
                available,
            )

    def _vector(
        self, snap: _Snapshot, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        now = self._clock()
        entity = snap.entities[entity_type].get(entity_id)
        if entity is None:
            logger.info("entity %s/%s not found in %s", entity_type, entity_id, self.data_path)
            return FeatureVector.empty(entity_id, entity_type, self.source, retrieved_at=now)
        features: Dict[str, Any] = {}
        ages: Dict[str, float] = {}
        for name in feature_names:
            value = entity.features.get(name)
            if value is None:
                continue
            features[name] = value
            ages[name] = age_of(entity.timestamps[name], now)
        if not features:  # the entity exists, every requested feature is null (as Feast says)
            return FeatureVector.empty(
                entity_id, entity_type, self.source, FeatureStatus.FOUND, retrieved_at=now
            )
        return FeatureVector.from_ages(
            entity_id, entity_type, self.source, features, ages, retrieved_at=now
        )

    def get_features(
        self, entity_id: str, entity_type: str, feature_names: List[str]
    ) -> FeatureVector:
        """Features of one entity; an empty vector (logged at INFO) when it is missing."""
        snap = self._load()
        self._check_names(snap, entity_type, feature_names)
        return self._vector(snap, entity_id, entity_type, feature_names)

    def get_batch_features(
        self, entity_ids: List[str], entity_type: str, feature_names: List[str]
    ) -> List[FeatureVector]:
        """One vector per id, in input order, duplicates and missing ids included."""
        snap = self._load()
        self._check_names(snap, entity_type, feature_names)
        return [self._vector(snap, eid, entity_type, feature_names) for eid in entity_ids]

    def health_check(self) -> bool:
        """True only when the file can be read and parsed."""
        try:
            self._load()
        except (FeatureStoreUnavailableError, OSError):
            return False
        return True

    def list_features(self, entity_type: Optional[str] = None) -> Dict[str, List[str]]:
        """Feature names present in the file, per entity type."""
        snap = self._load()
        if entity_type is not None:
            self._check_names(snap, entity_type, [])
            return {entity_type: sorted(snap.feature_names[entity_type])}
        return {etype: sorted(names) for etype, names in snap.feature_names.items()}

    @staticmethod
    def write(data_path: Union[str, Path], data: Dict[str, Any]) -> None:
        """Atomically write a feature file (a reader never sees it half-written)."""
        path = Path(data_path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)
