"""The Redis backend of the shared monitor state (:mod:`asahi_features.monitor.shared`).

Keys (``P`` is ``monitor.shared_state.key_prefix``):

* ``P:replicas``: a set of replica ids;
* ``P:replica:<id>``: a hash, one replica's cumulative state (fields of
  :mod:`~asahi_features.monitor.shared_merge`: ``schema``, ``counters``, ``quality``,
  ``latency`` and ``t:<task as a JSON string>``, each a small JSON document). Its size is bounded by
  ``max_task_types``;
* ``P:replica:__retired__``: the folded state of replicas silent for
  ``retire_after_seconds`` (with a ``seq`` field, the compare-and-set of folds), and
  ``P:retired_ids``: the configured replica ids that were folded (a full write under
  one of them is refused, so their counts are never added twice);
* ``P:verdicts``: a hash, ``t:<task as a JSON string>`` -> ``"<0|1>:<generation>"``,
  the shared quality verdicts.

Writes and verdict updates are Lua scripts, so each is atomic: a reader never sees half
a flush, and a verdict flip is a compare-and-set on its generation. Only the monitor's
background thread talks to Redis; redis-py is imported when a monitor is configured
with ``shared_state``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

from .shared_merge import task_field, task_name
from .shared_store import Flip, ReplicaRetired, Verdict

_WRITE = """
if ARGV[2] == '0' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[2] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return -1
end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

_VERDICTS = """
local known = tonumber(ARGV[1])
local i = 2
for _ = 1, known do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  local task, generation, value = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local current = redis.call('HGET', KEYS[1], task)
  local seen = 0
  if current then
    seen = tonumber(string.match(current, ':(%d+)$')) or 0
  end
  if seen == generation then
    redis.call('HSET', KEYS[1], task, value .. ':' .. tostring(generation + 1))
  end
  i = i + 3
end
return redis.call('HGETALL', KEYS[1])
"""


_FOLD = """
local prefix, seq = ARGV[1], ARGV[3]
local current = redis.call('HGET', KEYS[1], 'seq') or '0'
if current ~= seq then
  return 0
end
local i = 4
local stale = {}
for _ = 1, tonumber(ARGV[i]) do
  if redis.call('HGET', prefix .. ARGV[i + 1], 'written_at') ~= ARGV[i + 2] then
    return 0
  end
  table.insert(stale, ARGV[i + 1])
  i = i + 2
end
i = i + 1
local remember = {}
for _ = 1, tonumber(ARGV[i]) do
  table.insert(remember, ARGV[i + 1])
  i = i + 1
end
i = i + 1
redis.call('DEL', KEYS[1])
while i <= #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'seq', tostring(tonumber(seq) + 1))
redis.call('SADD', KEYS[2], ARGV[2])
for _, rid in ipairs(stale) do
  redis.call('DEL', prefix .. rid)
  redis.call('SREM', KEYS[2], rid)
end
for _, rid in ipairs(remember) do
  redis.call('SADD', KEYS[3], rid)
end
return 1
"""


def _encode_verdict(verdict: Verdict) -> str:
    return f"{1 if verdict[0] else 0}:{verdict[1]}"


def _decode_verdict(text: str) -> Verdict:
    value, _, generation = text.partition(":")
    return value == "1", int(generation) if generation.isdigit() else 0


class RedisSharedStore:
    """:class:`~asahi_features.monitor.shared.SharedStore` on one Redis database.

    Args:
        url: a redis-py URL (``redis://``, ``rediss://`` or ``unix://``).
        key_prefix: prefix of every key.
        socket_timeout: seconds each call may take (connect and read).

    Raises:
        ImportError: redis-py is not installed.
        ConfigError: the URL is not one redis-py accepts (the URL is not shown: it may
            hold a password).
    """

    name = "redis"

    def __init__(self, url: str, *, key_prefix: str, socket_timeout: float = 1.0) -> None:
        try:
            import redis  # noqa: F401 - imported again by _connect; fail here, clearly
        except ImportError as exc:  # pragma: no cover - redis is a dependency of the extra
            raise ImportError(
                "monitor.shared_state with backend redis needs redis-py: "
                "pip install 'asahi-features[redis]'"
            ) from exc
        from ..errors import ConfigError

        self._url = url
        self._socket_timeout = socket_timeout
        try:
            self._connect()
        except ValueError as exc:
            raise ConfigError(
                "monitor.shared_state.url is not a Redis URL (redis://host:port/db, "
                "rediss://... or unix://...); the value is not shown",
                key_path="monitor.shared_state.url",
            ) from exc
        self.prefix = key_prefix
        self._replicas_key = f"{key_prefix}:replicas"
        self._verdicts_key = f"{key_prefix}:verdicts"
        self._retired_key = f"{key_prefix}:retired_ids"

    def _connect(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis: Any = redis.Redis.from_url(
            self._url,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            decode_responses=True,
            health_check_interval=30,
            # one immediate retry (a pooled connection that a restart closed), never
            # redis-py's default backoff of seconds: the next sync is the retry
            retry=Retry(NoBackoff(), 1),
        )
        self._write = self._redis.register_script(_WRITE)
        self._fold = self._redis.register_script(_FOLD)
        self._verdicts = self._redis.register_script(_VERDICTS)

    def after_fork(self) -> None:
        """In a forked child: a connection pool of its own. The inherited one may hold a
        lock that a thread of the parent had taken at the fork, which nothing in the
        child would ever release (redis-py then refuses every call)."""
        self._connect()

    def _record_key(self, replica: str) -> str:
        return f"{self.prefix}:replica:{replica}"

    def write(self, replica: str, fields: Mapping[str, str], *, full: bool) -> bool:
        """See :meth:`~asahi_features.monitor.shared.SharedStore.write`."""
        args: List[str] = [replica, "1" if full else "0"]
        for key, value in fields.items():
            args.append(key)
            args.append(value)
        done = int(
            self._write(
                keys=[self._record_key(replica), self._replicas_key, self._retired_key],
                args=args,
            )
        )
        if done < 0:
            raise ReplicaRetired(replica)
        return bool(done)

    def read_all(self) -> Dict[str, Dict[str, str]]:
        """See :meth:`~asahi_features.monitor.shared.SharedStore.read_all`."""
        replicas = sorted(self._redis.smembers(self._replicas_key))
        if not replicas:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for rid in replicas:
            pipe.hgetall(self._record_key(rid))
        records = pipe.execute()
        return {rid: fields for rid, fields in zip(replicas, records, strict=True) if fields}

    def sync_verdicts(
        self, known: Mapping[str, Verdict], flips: Mapping[str, Flip]
    ) -> Dict[str, Verdict]:
        """See :meth:`~asahi_features.monitor.shared.SharedStore.sync_verdicts`."""
        args: List[Any] = [len(known)]
        for task, verdict in known.items():
            args.append(task_field(task))
            args.append(_encode_verdict(verdict))
        for task, (generation, disabled) in flips.items():
            args.extend((task_field(task), generation, "1" if disabled else "0"))
        flat = self._verdicts(keys=[self._verdicts_key], args=args)
        verdicts: Dict[str, Verdict] = {}
        for i in range(0, len(flat), 2):
            try:
                verdicts[task_name(flat[i])] = _decode_verdict(flat[i + 1])
            except ValueError:  # not written by this library: not a verdict
                continue
        return verdicts

    def fold(
        self,
        into: str,
        seq: int,
        fields: Mapping[str, str],
        stale: Mapping[str, str],
        remember: Iterable[str],
    ) -> bool:
        """See :meth:`~asahi_features.monitor.shared.SharedStore.fold`."""
        args: List[Any] = [self._record_key(""), into, str(seq), len(stale)]
        for rid, stamp in stale.items():
            args.extend((rid, stamp))
        ids = list(remember)
        args.append(len(ids))
        args.extend(ids)
        for key, value in fields.items():
            args.extend((key, value))
        keys = [self._record_key(into), self._replicas_key, self._retired_key]
        return bool(int(self._fold(keys=keys, args=args)))

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
