"""A shared ledger in Redis: grants decided by one Lua script on the server's clock.

Each key holds a sorted set of grants scored by expiry (a member is ``n:grant_id``), a hash
of shared state (the limit every sharer must state, the pacer's schedule, a pause), and the
queue of waiting tickets. The script runs atomically and reads the time with ``TIME``, so
every process is judged on one clock whatever its own says; it does what
`importer.quota.local.decide` does, step for step. Every key expires once unused for a
lease and a period, so an abandoned quota leaves nothing behind.

Redis down, or slower than the ledger timeout, stops the run (QuotaUnavailable): never a
fallback to sending unshared. The server's clock may be slewed (NTP) but must not be stepped
forward while grants are live: expiries are times on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from importer.quota.base import (
    POLL_SECONDS,
    TICKET_STALE_SECONDS,
    Attempt,
    QuotaTerms,
    QuotaUnavailable,
    mismatch,
)

T = TypeVar("T")

KEY_PREFIX = "moe-import:quota:"

# Shared by the scripts: the server's time, and the keys kept alive while in use.
_PRELUDE = """
local grants, state, queue, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function keep(ttl_ms)
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl_ms) end
end
"""

# ARGV: limit label, updates, ticket, n, grant id, lease, pacer interval, pacer tolerance,
# ticket staleness, poll, ttl (ms). Returns {'granted', now} | {'wait', seconds} |
# {'mismatch', the limit already in use}.
ACQUIRE = (
    _PRELUDE
    + """
local label, updates, ticket = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n, gid = tonumber(ARGV[4]), ARGV[5]
local lease, interval, tolerance = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local stale, poll, ttl = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])

redis.call('ZREMRANGEBYSCORE', grants, '-inf', fmt(now))
for _, tk in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
  if tonumber(redis.call('HGET', seen, tk) or '0') < now - stale then
    redis.call('ZREM', queue, tk)
    redis.call('HDEL', seen, tk)
  end
end
local limit = redis.call('HGET', state, 'limit')
if limit and limit ~= label then
  if redis.call('ZCARD', grants) > 0 or redis.call('ZCARD', queue) > 0 then
    return {'mismatch', limit}
  end
end
redis.call('HSET', state, 'limit', label)
if not redis.call('ZSCORE', queue, ticket) then redis.call('ZADD', queue, fmt(now), ticket) end
redis.call('HSET', seen, ticket, fmt(now))
keep(ttl)
local head = redis.call('ZRANGE', queue, 0, 0)[1]
if head ~= ticket then return {'wait', fmt(poll)} end

local wait = math.max(0, tonumber(redis.call('HGET', state, 'paused_until') or '0') - now)
local tat = math.max(tonumber(redis.call('HGET', state, 'tat') or '0'), now)
wait = math.max(wait, tat - tolerance - now)
local members = redis.call('ZRANGE', grants, 0, -1, 'WITHSCORES')
local occupied = 0
for i = 1, #members, 2 do occupied = occupied + tonumber(string.match(members[i], '^(%d+):')) end
if occupied + n > updates then
  local excess, freed, room_at = occupied + n - updates, 0, nil
  for i = 1, #members, 2 do
    freed = freed + tonumber(string.match(members[i], '^(%d+):'))
    if freed >= excess then room_at = tonumber(members[i + 1]); break end
  end
  if room_at == nil then wait = math.max(wait, poll) else wait = math.max(wait, room_at - now) end
end
if wait > 0 then return {'wait', fmt(math.min(wait, poll))} end

redis.call('ZADD', grants, fmt(now + lease), n .. ':' .. gid)
redis.call('HSET', state, 'tat', fmt(tat + n * interval))
redis.call('ZREM', queue, ticket)
redis.call('HDEL', seen, ticket)
return {'granted', fmt(now)}
"""
)

# ARGV: member, hold, period, ttl (ms). The grant's slots free at now + hold + period.
RELEASE = (
    _PRELUDE
    + """
redis.call('ZADD', grants, fmt(now + tonumber(ARGV[2]) + tonumber(ARGV[3])), ARGV[1])
keep(tonumber(ARGV[4]))
return 1
"""
)

# ARGV: seconds, ttl (ms).
PAUSE = (
    _PRELUDE
    + """
local resume_at = now + tonumber(ARGV[1])
if resume_at > tonumber(redis.call('HGET', state, 'paused_until') or '0') then
  redis.call('HSET', state, 'paused_until', fmt(resume_at))
end
keep(tonumber(ARGV[2]))
return 1
"""
)

# Occupied slots now: grants not yet expired.
OCCUPIED = (
    _PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', grants, '-inf', fmt(now))
local total = 0
for _, m in ipairs(redis.call('ZRANGE', grants, 0, -1)) do
  total = total + tonumber(string.match(m, '^(%d+):'))
end
return total
"""
)


def redacted(url: str) -> str:
    """The URL without its password, for messages, whatever characters the password holds:
    the credentials run to the last `@` (a password with an unencoded `/`, `#` or `?`
    would end the authority early for a URL parser, and show the rest as a path)."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not separator or not at:
        return url
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{host}"


class RedisLedger:
    """The shared ledger of one key in one Redis server."""

    def __init__(self, terms: QuotaTerms, url: str, key: str, timeout: float = 5.0) -> None:
        self.terms = terms
        self.url = url
        self.timeout = timeout
        # One hash tag for all four keys: a Redis Cluster keeps them on one node, as a
        # script that touches them together requires.
        base = f"{KEY_PREFIX}{{{key}}}"
        self.keys = [f"{base}:grants", f"{base}:state", f"{base}:queue", f"{base}:seen"]
        # Keys outlive every lease and its period: a dead process's grants expire first.
        self._ttl_ms = int((terms.lease_seconds + terms.period_seconds) * 1000) + 1000
        try:
            self._client: aioredis.Redis = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=True,
            )
        except ValueError as error:
            raise QuotaUnavailable(f"{redacted(url)} is not a Redis URL: {error}") from None
        self._acquire = self._client.register_script(ACQUIRE)
        self._release = self._client.register_script(RELEASE)
        self._pause = self._client.register_script(PAUSE)
        self._occupied = self._client.register_script(OCCUPIED)

    def describe(self) -> str:
        return f"Redis at {redacted(self.url)}"

    async def try_acquire(self, ticket: str, n: int, grant_id: str) -> Attempt:
        terms = self.terms
        args: list[str | int] = [
            terms.limit_label,
            terms.updates,
            ticket,
            n,
            grant_id,
            repr(terms.lease_seconds),
            repr(terms.pacer_interval),
            repr(terms.pacer_tolerance),
            repr(TICKET_STALE_SECONDS),
            repr(POLL_SECONDS),
            self._ttl_ms,
        ]
        kind, value = await self._call(self._acquire(keys=self.keys, args=args))
        if kind == "granted":
            return Attempt(f"{n}:{grant_id}")
        if kind == "mismatch":
            raise mismatch(str(value), terms.limit_label)
        return Attempt(None, float(value))

    async def release(self, grant_id: str, hold: float) -> None:
        args: list[str | int] = [
            grant_id,
            repr(hold),
            repr(self.terms.period_seconds),
            self._ttl_ms,
        ]
        await self._call(self._release(keys=self.keys, args=args))

    async def forget(self, grant_id: str, n: int) -> None:
        await self._call(self._client.zrem(self.keys[0], f"{n}:{grant_id}"))

    async def pause(self, seconds: float) -> None:
        await self._call(self._pause(keys=self.keys, args=[repr(seconds), self._ttl_ms]))

    async def leave(self, ticket: str) -> None:
        await self._call(self._client.zrem(self.keys[2], ticket))

    async def occupied(self) -> int:
        return int(await self._call(self._occupied(keys=self.keys, args=[])))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, call: Awaitable[T]) -> Any:
        try:
            return await asyncio.wait_for(call, self.timeout)
        except (RedisError, OSError, TimeoutError) as error:
            reason = "no answer in time" if isinstance(error, TimeoutError) else str(error)
            raise QuotaUnavailable(f"{self.describe()}: {reason or type(error).__name__}") from None
