"""Rollout state in Redis, shared by every worker and replica of one gateway (one key prefix).

Keys, under the prefix ``p``:

- ``p:state``: a hash, model -> the ``RolloutState`` as JSON;
- ``p:versions:<model>``: a hash, version -> folder, for versions registered at run time;
- ``p:decisions:<model>``: a list, the decision log (the newest ``KEEP_DECISIONS``), and
  ``p:decided:<model>``, how many decisions were ever appended to it (a reader asks for those
  past the count it has read: the list's length stops growing at the cap);
- ``p:lease`` and ``p:fence``: the acting controller's lease, ``"<token>:<worker>"`` with an
  expiry, and the counter its fencing tokens come from;
- ``p:step:<model>:<window>``: a hash, worker -> that worker's cumulative counts of one step;
- ``p:preds:<minute>``: a hash, request id -> a prediction that feedback may join, expiring;
- ``p:label:<request id>``: the label that joined a prediction (it counts once);
- ``p:events``: the channel a state change is announced on.

Every write of state goes through one script that compares and sets on the revision's lineage
(a new revision only on top of the very state it was made from: its parent's revision and
stamp; a checkpoint only over itself) and, for the controller's writes, checks the fencing token: a
worker whose lease has passed to another cannot write, even if it has not noticed yet. A state
and the decision that made it are written together or not at all.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from canarygate.errors import ConfigError
from canarygate.rollout.state import RolloutState

KEEP_DECISIONS = 10_000
STEP_TTL_SECONDS = 7 * 86_400  # a step's counts outlive any step
BUCKET_SECONDS = 60  # the shared feedback index keeps a hash of predictions per minute

# KEYS: state hash, lease, decisions list, decisions count. ARGV: model, state JSON or "",
# revision, token or "", decision JSON or "", channel, decisions kept, the state's stamp,
# its parent's stamp.
# A state is taken on top of its parent (the stored revision is one less and has the parent's
# stamp), or over itself (the same revision and stamp: a checkpoint, not announced: followers
# read it at their next sync), or on an empty slot.
_COMMIT = """
local announce = ARGV[2] ~= ''
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
if ARGV[2] ~= '' then
  local current = redis.call('HGET', KEYS[1], ARGV[1])
  if current then
    local stored = cjson.decode(current)
    local revision, stamp = tonumber(stored['revision']), stored['stamp'] or ''
    if type(stamp) ~= 'string' then stamp = '' end
    local wanted = tonumber(ARGV[3])
    local on_parent = revision == wanted - 1 and stamp == ARGV[9]
    local itself = revision == wanted and stamp == ARGV[8]
    if not (on_parent or itself) then return 0 end
    announce = not itself
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)
  redis.call('INCR', KEYS[4])
end
if announce then redis.call('PUBLISH', ARGV[6], ARGV[1]) end
return 1
"""
# KEYS: decisions list, decisions count. ARGV: decisions read so far, most to return.
# Returns the count and the decisions appended since, read in one step (a length read apart
# from the range would skip one appended in between and read it twice later). A count below
# what was read means the log was reset: it is read again from its start. A list without a
# count (written before there was one) counts its length.
_READ = """
local length = redis.call('LLEN', KEYS[1])
local total = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), length)
local new = total - tonumber(ARGV[1])
if new < 0 then new = total end
new = math.min(new, length, tonumber(ARGV[2]))
if new <= 0 then return {total, {}} end
return {total, redis.call('LRANGE', KEYS[1], -new, -1)}
"""
# KEYS: lease, fence. ARGV: worker, milliseconds.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local holder = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], holder, 'PX', ARGV[2])
return holder
"""
# KEYS: lease. ARGV: holder, milliseconds (0 releases).
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class Fenced(Exception):
    """The write carried a lease that is no longer the current one."""


class StaleRevision(Exception):
    """The stored state is at this revision or newer."""


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}:events"
        self._commit = client.register_script(_COMMIT)
        self._read = client.register_script(_READ)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    @classmethod
    def connect(cls, url: str, prefix: str, timeout: float) -> RedisStore:
        """A store on ``url``, checked by a PING (ConfigError naming the URL's host when
        Redis cannot be reached at start)."""
        client = redis.Redis.from_url(url, socket_timeout=timeout,
                                      socket_connect_timeout=timeout, decode_responses=True)
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            where = url.rpartition("@")[2]  # never the password
            raise ConfigError(f"cannot reach Redis at {where} (state.backend is redis): "
                              f"{exc}") from None
        return cls(client, prefix)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- the StateStore interface (start-up and the catalog) ----------------------------------

    def load(self) -> dict[str, RolloutState]:
        raw: dict[str, str] = self.client.hgetall(self.key("state"))  # type: ignore[assignment]
        try:
            return {model: RolloutState.from_json(json.loads(text))
                    for model, text in raw.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"Redis key {self.key('state')} holds an invalid rollout state "
                              f"({exc})") from None

    def save(self, state: RolloutState) -> None:
        self.commit(state, None, None)

    def load_versions(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for key in self.client.scan_iter(self.key("versions", "*")):
            versions: dict[str, str] = self.client.hgetall(key)  # type: ignore[assignment]
            out[str(key).rpartition(":")[2]] = versions
        return out

    def save_version(self, model: str, version: str, path: str) -> None:
        try:
            self.client.hset(self.key("versions", model), version, path)
        except redis.RedisError as exc:  # the catalog's callers handle OSError
            raise OSError(f"Redis: {exc}") from exc

    # -- writes of the controller and of people ------------------------------------------------

    def commit(self, state: RolloutState | None, decision: dict[str, Any] | None,
               holder: str | None) -> None:
        """Write ``state`` (compare-and-set on its revision) and append ``decision``, both or
        neither; with ``holder`` (the controller's lease), only while that lease holds.
        Raises Fenced or StaleRevision when refused, redis.RedisError when Redis is away."""
        model = state.model if state is not None else (decision or {}).get("model", "")
        result = self._commit(
            keys=[self.key("state"), self.key("lease"), self.key("decisions", model),
                  self.key("decided", model)],
            args=[model, json.dumps(state.to_json()) if state is not None else "",
                  state.revision if state is not None else 0, holder or "",
                  json.dumps(decision) if decision is not None else "", self.channel,
                  KEEP_DECISIONS, state.stamp if state is not None else "",
                  state.parent if state is not None else ""])
        if result == -1:
            raise Fenced(f"the controller's lease {holder!r} is no longer the current one")
        if result == 0:
            raise StaleRevision(f"the stored rollout of {model!r} is no longer the revision "
                                f"{state.revision - 1 if state else 0} this one was made "
                                "from")

    def decisions_since(self, model: str, seen: int,
                        limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many decisions ``model``'s log has had, and those after the first ``seen``
        (at most ``limit``, the newest; fewer if the log dropped them), oldest first."""
        total, texts = self._read(keys=[self.key("decisions", model),
                                        self.key("decided", model)], args=[seen, limit])
        return int(total), [json.loads(text) for text in texts]

    # -- the lease -------------------------------------------------------------------------

    def acquire(self, worker: str, seconds: float) -> str | None:
        """The lease (``"<token>:<worker>"``) if nobody holds it, else None."""
        holder = self._acquire(keys=[self.key("lease"), self.key("fence")],
                               args=[worker, int(seconds * 1000)])
        return str(holder) if holder else None

    def renew(self, holder: str, seconds: float) -> bool:
        return bool(self._renew(keys=[self.key("lease")], args=[holder, int(seconds * 1000)]))

    def release(self, holder: str) -> None:
        self._renew(keys=[self.key("lease")], args=[holder, 0])

    def holder(self) -> str | None:
        found = self.client.get(self.key("lease"))
        return str(found) if found is not None else None

    # -- the shared feedback index -------------------------------------------------------------

    def put_predictions(self, minute: int, entries: dict[str, str], seconds: float) -> None:
        """Predictions shipped in one minute go to one hash: two commands a batch, however
        many predictions it holds (the commands a worker sends do not grow with its rate)."""
        key = self.key("preds", str(minute))
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=entries)  # type: ignore[arg-type]  # a dict[str, str] is one
        pipe.pexpire(key, max(int((seconds + BUCKET_SECONDS) * 1000), 1), gt=True)
        pipe.execute()

    def get_predictions(self, rids: list[str], minutes: list[int]) -> dict[str, str]:
        """The predictions of ``rids`` found in the buckets of ``minutes`` (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for minute in minutes:
            pipe.hmget(self.key("preds", str(minute)), rids)
        found: dict[str, str] = {}
        for values in pipe.execute():
            for rid, text in zip(rids, values, strict=True):
                if text is not None:
                    found.setdefault(rid, text)
        return found

    def claim(self, claims: dict[str, str], seconds: float) -> list[str | None]:
        """Set each key that is not set yet; for each, what was there before (None: ours)."""
        pipe = self.client.pipeline(transaction=True)  # each SET with its GET, atomically
        for key, text in claims.items():
            pipe.set(key, text, nx=True, px=max(int(seconds * 1000), 1))
            pipe.get(key)
        replies = pipe.execute()
        return [None if set_ else got for set_, got in zip(replies[::2], replies[1::2],
                                                            strict=True)]

    # -- telemetry ---------------------------------------------------------------------------

    def put_steps(self, worker: str, steps: dict[tuple[str, int], str]) -> None:
        """This worker's cumulative counts of each (model, window)."""
        pipe = self.client.pipeline(transaction=False)
        for (model, window), text in steps.items():
            key = self.key("step", model, str(window))
            pipe.hset(key, worker, text)
            pipe.expire(key, STEP_TTL_SECONDS)
        pipe.execute()

    def get_steps(self, wanted: list[tuple[str, int]]) -> dict[tuple[str, int], dict[str, str]]:
        """Every worker's counts of each (model, window)."""
        pipe = self.client.pipeline(transaction=False)
        for model, window in wanted:
            pipe.hgetall(self.key("step", model, str(window)))
        return dict(zip(wanted, pipe.execute(), strict=True))

    # -- drift, detectors and live figures shared by every worker (rollout/telemetry.py) ----

    def put_fields(self, items: list[tuple[str, dict[str, str]]], seconds: float) -> None:
        """Each (key, fields): the fields set in the hash, which expires ``seconds`` later."""
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, fields in items:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # a dict[str, str] is one
            pipe.expire(key, max(int(seconds), 1))
        pipe.execute()

    def get_fields(self, keys: list[str]) -> list[dict[str, str]]:
        """Each hash whole (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return list(pipe.execute())

    def add_batches(self, key: str, texts: list[str], keep: int) -> None:
        """Append to a stream, which keeps about its ``keep`` newest entries."""
        if not texts:
            return
        pipe = self.client.pipeline(transaction=False)
        for text in texts:
            pipe.xadd(key, {"b": text}, maxlen=keep, approximate=True)
        pipe.execute()

    def read_batches(self, key: str, after: str | None, count: int) -> list[tuple[str, str]]:
        """The stream's entries after the id ``after`` (all it holds with None), oldest
        first: (id, text)."""
        entries: list[tuple[str, dict[str, str]]] = self.client.xrange(  # type: ignore[assignment]
            key, min="-" if after is None else f"({after}", count=count)
        return [(str(entry_id), str(fields["b"])) for entry_id, fields in entries]
