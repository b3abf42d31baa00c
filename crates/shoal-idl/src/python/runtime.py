# The client runtime, the same in every module `shoal idl python` writes: endpoints and
# their checks, the balancing of shoal's Rust client, and synchronous MessagePack-RPC.

import bisect
import dataclasses
import hashlib
import json
import os
import random
import re
import socket
import threading
import time
import tomllib
from typing import Any

import msgpack

DEFAULT_TIMEOUT = 3.0
"""Seconds a call may take, connecting and retrying included, unless the client or the call
says otherwise."""

_CONNECT_TIMEOUT = 3.0
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 5.0
_POINTS_PER_WEIGHT = 512
_MAX_WEIGHT = 100
_MAX_KEY = 2**64 - 1
_BALANCES = ("round_robin", "least_pending", "hashring", "shard")
_METHOD_NOT_FOUND = 1


class RpcError(Exception):
    """Why a call failed; the base of every error a call raises."""


class RemoteError(RpcError):
    """The server answered the call with an error object.

    `error` is the object as it came. `code`, `message` and `data` are read from it: a shoal
    server sends `{"code": int, "message": str, "data": any}`; other servers' strings and
    `[kind, message]` pairs become the message, with `code` None.
    """

    def __init__(self, error: Any) -> None:
        self.error = error
        self.code, self.message, self.data = _read_error(error)
        text = self.message if self.code is None else f"{self.message} (code {self.code})"
        super().__init__(text)


class DeadlineExceeded(RpcError, TimeoutError):
    """No answer came within the call's timeout; the server may still have handled it."""


class NotSent(RpcError, ConnectionError):
    """The request never left this client: no endpoint it tried could be connected to."""


class ConnectionClosed(RpcError, ConnectionError):
    """The connection broke before the answer came; the server may have handled the call."""


class ProtocolError(RpcError):
    """The server sent something that is not MessagePack-RPC."""


class ConfigError(ValueError):
    """An endpoint file or list is wrong; the message names the file (or `endpoints`) and
    the key at fault."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One server: `addr` is `host:port` or `unix:PATH`, the identity the hash ring hashes,
    as written; `weight` 1 to 100 (`round_robin`, `least_pending`, `hashring`); `shard` an
    inclusive range `(begin, end)` of `key % shard_count` and `backup` the address serving it
    while this endpoint is down (`shard` only)."""

    addr: str
    weight: int = 1
    shard: tuple[int, int] | None = None
    backup: str | None = None


class Endpoints:
    """Checked endpoints and how calls are spread over them: what a client is built from.

    `Endpoints.load(path)` reads the TOML endpoint file shoal's Rust client reads;
    `Endpoints.of(items, balance=..., shard_count=...)` takes them from code. Without a
    `balance`, the module's `DEFAULT_BALANCE` (from the IDL's `rpc_client.mode`) applies.
    """

    def __init__(self, table: Any, origin: str = "endpoints") -> None:
        """Checks `table`, shaped like an endpoint file (`balance`, `shard_count`, and an
        `endpoint` list of tables with `addr`, `weight`, `shard`, `backup`); `origin` starts
        every error."""
        self.origin = origin
        self.balance, self.shard_count, self.endpoints, ranges = _check(table, origin)
        weights = [e.weight for e in self.endpoints]
        # Round-robin turns: round `r` visits every endpoint whose weight exceeds `r`.
        self._turns = [
            i for r in range(max(weights)) for i in range(len(weights)) if weights[i] > r
        ]
        self._ring = None
        if self.balance == "hashring":
            self._ring = _Ring([(e.addr, e.weight) for e in self.endpoints])
        self._shards = None
        if self.shard_count is not None:
            self._shards = _Shards(self.shard_count, ranges)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Endpoints:
        """Reads and checks the endpoint file at `path`."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"read endpoint file {path}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cls(table, path)

    @classmethod
    def of(
        cls,
        items: Any,
        *,
        balance: str | None = None,
        shard_count: int | None = None,
    ) -> Endpoints:
        """Endpoints from code: each item an address string, an `Endpoint`, or a dict with an
        endpoint file's keys."""
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise ConfigError(
                f"endpoints: expected a list of addresses or Endpoint values, got {items!r}"
            )
        table: dict[str, Any] = {"endpoint": [_entry(item) for item in items]}
        if balance is not None:
            table["balance"] = balance
        if shard_count is not None:
            table["shard_count"] = shard_count
        return cls(table, "endpoints")

    def route(self, key: int | str) -> list[str]:
        """The addresses a call with `key` tries, in order, while every endpoint is in
        service: the ring's owner of the key and then the next endpoints clockwise
        (`hashring`), or the shard's primary and its backup (`shard`)."""
        key = _check_key(key, self.balance)
        if self._ring is not None:
            return [self.endpoints[i].addr for i in self._ring.walk(_key_hash(key))]
        if self._shards is not None and isinstance(key, int):
            return [self.endpoints[i].addr for i in self._shards.route(key) if i is not None]
        raise ValueError(f"{self.balance} balancing does not route by key")

    def __repr__(self) -> str:
        return f"Endpoints({self.balance}, {len(self.endpoints)} from {self.origin})"


def _endpoints(endpoints: Any, balance: str | None, shard_count: int | None) -> Endpoints:
    """What a client's constructor was given, as checked `Endpoints`."""
    if isinstance(endpoints, (Endpoints, str, os.PathLike)):
        if balance is not None or shard_count is not None:
            origin = endpoints.origin if isinstance(endpoints, Endpoints) else os.fspath(endpoints)
            raise ConfigError(
                f"{origin}: balance and shard_count come from the endpoint file; "
                "pass them only with a list of endpoints"
            )
        return endpoints if isinstance(endpoints, Endpoints) else Endpoints.load(endpoints)
    return Endpoints.of(endpoints, balance=balance, shard_count=shard_count)


class _Rpc:
    """A client's connections, health and balancing; calls take turns on a lock."""

    def __init__(self, endpoints: Endpoints, key: Any, timeout: Any, retries: Any) -> None:
        self.endpoints = endpoints
        self._pinned = None if key is None else _check_key(key, endpoints.balance)
        # Like pysvrkit's clients, a client without keys sticks to one server on the ring,
        # and many such clients spread over it.
        self._own_key = random.getrandbits(64)
        self._timeout = _positive(timeout, "timeout")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries: expected an integer of at least 0, got {retries!r}")
        self._retries = retries
        self._nodes = [_Node(e.addr) for e in endpoints.endpoints]
        self._turn = 0
        self._msgid = 0
        self._lock = threading.Lock()

    def call(self, method: str, params: list[Any], key: Any, timeout: float | None) -> Any:
        return self._run(method, params, key, timeout, True)

    def notify(self, method: str, params: list[Any], key: Any, timeout: float | None) -> None:
        self._run(method, params, key, timeout, False)

    def close(self) -> None:
        with self._lock:
            for node in self._nodes:
                node.drop()

    def _run(self, method: str, params: list[Any], key: Any, timeout: Any, reply: bool) -> Any:
        limit = self._timeout if timeout is None else _positive(timeout, "timeout")
        route = self._pinned if key is None else _check_key(key, self.endpoints.balance)
        if route is None and self.endpoints.balance == "shard":
            raise ValueError(
                "shard balancing needs an integer key: pass key= to the call or to the client"
            )
        try:
            body = msgpack.packb(params, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"cannot encode the arguments of {method}: {e}") from None
        head = msgpack.packb(method, use_bin_type=True)
        deadline = time.monotonic() + limit
        with self._lock:
            tried: list[int] = []
            last: NotSent | None = None
            while True:
                index = self._pick(route, tried)
                if index is None:
                    assert last is not None
                    raise last
                tried.append(index)
                node = self._nodes[index]
                if reply:
                    self._msgid = (self._msgid + 1) % 2**31
                    msgid = self._msgid
                    frame = b"\x94\x00" + msgpack.packb(msgid) + head + body
                else:
                    msgid = None
                    frame = b"\x93\x02" + head + body
                try:
                    answer = node.attempt(frame, msgid, deadline, limit)
                except NotSent as e:
                    node.health.failed(time.monotonic())
                    if len(tried) > self._retries:
                        raise
                    last = e
                    continue
                except (ConnectionClosed, ProtocolError):
                    node.health.failed(time.monotonic())
                    raise
                except BaseException:
                    # A timeout or an interrupted call says nothing about the endpoint.
                    node.health.probing = False
                    raise
                # Any answer, an error object included, shows the server is there.
                node.health.ok()
                if answer is None:
                    return None
                error, result = answer
                if error is not None:
                    raise RemoteError(error)
                return result

    def _pick(self, route: Any, tried: list[int]) -> int | None:
        """The endpoint for the next attempt, as shoal's Rust client picks it: the first
        candidate in service or due for its probe, else the candidate whose backoff ends
        first; None when every candidate has been tried."""
        now = time.monotonic()
        eps = self.endpoints
        healths = [node.health for node in self._nodes]
        fresh = [i for i in range(len(self._nodes)) if i not in tried]
        if eps.balance == "round_robin":
            turns = eps._turns
            start = self._turn
            self._turn += 1
            order = [turns[(start + k) % len(turns)] for k in range(len(turns))]
            order = [i for i in order if i not in tried]
        elif eps.balance == "least_pending":
            # Calls take turns, so none is ever pending: any endpoint in service will do.
            usable = [i for i in fresh if healths[i].usable(now)]
            order = ([random.choice(usable)] + usable) if usable else []
        elif eps._ring is not None:
            walk = eps._ring.walk(_key_hash(self._own_key if route is None else route))
            order = fresh = [i for i in walk if i not in tried]
        else:
            assert eps._shards is not None and isinstance(route, int)
            primary, backup = eps._shards.route(route)
            order = fresh = [i for i in (primary, backup) if i is not None and i not in tried]
        for i in order:
            if healths[i].admit(now):
                return i
        if not fresh:
            return None
        return min(fresh, key=lambda i: healths[i].retry_at or 0.0)


class _Health:
    """Ejection after a failure for a backoff that doubles (50 ms up to 5 s, plus up to 20%
    jitter), then one probe call."""

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at: float | None = None
        self.probing = False

    def admit(self, now: float) -> bool:
        if self.retry_at is None:
            return True
        if now >= self.retry_at and not self.probing:
            self.probing = True
            return True
        return False

    def usable(self, now: float) -> bool:
        return self.retry_at is None or (now >= self.retry_at and not self.probing)

    def failed(self, now: float) -> None:
        # Failures during one outage count once.
        if self.retry_at is not None and now < self.retry_at:
            return
        self.failures += 1
        backoff = min(_BACKOFF_MIN * 2 ** (min(self.failures, 16) - 1), _BACKOFF_MAX)
        # Jitter keeps many clients from probing a recovering server in lockstep.
        self.retry_at = now + backoff * (1 + random.random() * 0.2)
        self.probing = False

    def ok(self) -> None:
        self.failures, self.retry_at, self.probing = 0, None, False


class _Node:
    """One endpoint: its connection, opened on first use and kept, and its health."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.health = _Health()
        self._sock: socket.socket | None = None
        self._unpacker: msgpack.Unpacker | None = None

    def attempt(self, frame: bytes, msgid: int | None, deadline: float, limit: float) -> Any:
        """Sends `frame`; for a request (`msgid` set) returns `(error, result)`."""
        if self._sock is not None and not self._alive():
            # Closed by the server while idle (it restarted, or closed idle connections):
            # the request has not left, so a new connection is no retry.
            self.drop()
        if self._sock is None:
            self._connect(deadline, limit)
        try:
            self._send(frame, deadline, limit)
            return None if msgid is None else self._receive(msgid, deadline, limit)
        except BaseException:
            # Whatever comes later on this connection belongs to a call given up on.
            self.drop()
            raise

    def drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._unpacker = None

    def _connect(self, deadline: float, limit: float) -> None:
        wait = min(deadline - time.monotonic(), _CONNECT_TIMEOUT)
        if wait <= 0:
            raise DeadlineExceeded(f"{self.addr}: deadline of {limit:g}s exceeded")
        try:
            if self.addr.startswith("unix:"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(wait)
                    sock.connect(self.addr[len("unix:") :])
                except BaseException:
                    sock.close()
                    raise
            else:
                host, port = self.addr.rsplit(":", 1)
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout=wait)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"{self.addr}: deadline of {limit:g}s exceeded") from None
            raise NotSent(f"{self.addr}: not sent: connecting timed out after {wait:g}s") from None
        except OSError as e:
            raise NotSent(f"{self.addr}: not sent: {e.strerror or e}") from None
        self._sock = sock
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="replace")

    def _alive(self) -> bool:
        """The idle connection is still open (looked at without waiting)."""
        assert self._sock is not None
        try:
            self._sock.setblocking(False)
            try:
                return self._sock.recv(1, socket.MSG_PEEK) != b""
            finally:
                self._sock.setblocking(True)
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _send(self, frame: bytes, deadline: float, limit: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(self._left(deadline, limit))
        try:
            self._sock.sendall(frame)
        except TimeoutError:
            raise DeadlineExceeded(f"{self.addr}: deadline of {limit:g}s exceeded") from None
        except OSError as e:
            raise ConnectionClosed(f"connection to {self.addr} failed while sending: {e}") from None

    def _receive(self, msgid: int, deadline: float, limit: float) -> tuple[Any, Any]:
        assert self._sock is not None and self._unpacker is not None
        while True:
            try:
                for message in self._unpacker:
                    answer = self._handle(message, msgid)
                    if answer is not None:
                        return answer
            except (ValueError, msgpack.UnpackException) as e:
                raise ProtocolError(f"{self.addr}: malformed message: {e}") from None
            self._sock.settimeout(self._left(deadline, limit))
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise DeadlineExceeded(f"{self.addr}: deadline of {limit:g}s exceeded") from None
            except OSError as e:
                raise ConnectionClosed(f"connection to {self.addr} failed: {e}") from None
            if not data:
                raise ConnectionClosed(f"connection to {self.addr} closed before the reply came")
            self._unpacker.feed(data)

    def _handle(self, message: Any, msgid: int) -> tuple[Any, Any] | None:
        """The answer if `message` is the reply to `msgid`; answers a request from the server
        (this client serves no methods) and skips notifications and stale replies."""
        kind = message[0] if isinstance(message, list) and message else None
        if kind == 1 and len(message) == 4:
            return (message[2], message[3]) if message[1] == msgid else None
        if kind == 2 and len(message) == 3:
            return None
        if kind == 0 and len(message) == 4:
            error = {"code": _METHOD_NOT_FOUND, "message": f"method not found: {message[2]}"}
            assert self._sock is not None
            try:
                self._sock.sendall(msgpack.packb([1, message[1], error, None], use_bin_type=True))
            except OSError as e:
                raise ConnectionClosed(f"connection to {self.addr} failed: {e}") from None
            return None
        raise ProtocolError(f"{self.addr}: not a MessagePack-RPC message: {message!r:.200}")

    def _left(self, deadline: float, limit: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{self.addr}: deadline of {limit:g}s exceeded")
        return left


class _Ring:
    """The weighted consistent-hash ring of shoal's Rust client (`shoal_rpc::balance`):
    512 points per unit of weight at `h(f"{addr}#{i}")`, sorted by (point, addr)."""

    def __init__(self, members: list[tuple[str, int]]) -> None:
        entries = sorted(
            (_hash(f"{addr}#{i}".encode()), addr, index)
            for index, (addr, weight) in enumerate(members)
            for i in range(weight * _POINTS_PER_WEIGHT)
        )
        self._points = [point for point, _, _ in entries]
        self._owners = [index for _, _, index in entries]
        self._members = len(members)

    def walk(self, hash_: int) -> list[int]:
        """Every member once, clockwise from `hash_`: the owner first."""
        n = len(self._points)
        start = bisect.bisect_left(self._points, hash_)
        seen: list[int] = []
        for k in range(n):
            member = self._owners[(start + k) % n]
            if member not in seen:
                seen.append(member)
                if len(seen) == self._members:
                    break
        return seen


class _Shards:
    """`key % count` onto sorted inclusive ranges, each with its primary and backup."""

    def __init__(self, count: int, ranges: list[tuple[int, int, int, int | None]]) -> None:
        self._count = count
        self._ranges = ranges
        self._begins = [begin for begin, _, _, _ in ranges]

    def route(self, key: int) -> tuple[int, int | None]:
        at = bisect.bisect_right(self._begins, key % self._count) - 1
        _, _, primary, backup = self._ranges[at]
        return primary, backup


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def _key_hash(key: int | str) -> int:
    # An int hashes as its decimal digits, so 42 and "42" meet the same server.
    return _hash(str(key).encode())


def _check_key(key: Any, balance: str) -> int | str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"a key is an int or a str, got {key!r}")
    if isinstance(key, int) and not 0 <= key <= _MAX_KEY:
        raise ValueError(f"an integer key is from 0 to 2**64-1, got {key}")
    if isinstance(key, str) and balance == "shard":
        raise ValueError(f"shard balancing needs an integer key, not the text {key!r}")
    return key


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a positive number of seconds, got {_show(value)}")
    return float(value)


def _read_error(error: Any) -> tuple[int | None, str, Any]:
    """(code, message, data) of an error object, read as shoal's Rust client reads it."""

    def text(v: Any) -> str | None:
        if isinstance(v, str):
            return v
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return None

    code, message, data = None, None, None
    if isinstance(error, dict):
        for k, v in error.items():
            k = text(k)
            if k == "code" and isinstance(v, int) and not isinstance(v, bool):
                code = v
            elif k == "message":
                message = text(v)
            elif k == "data":
                data = v
    elif isinstance(error, list) and len(error) == 2:
        kind, msg = text(error[0]), text(error[1])
        if kind is not None and msg is not None:
            message = f"{kind}: {msg}"
        elif isinstance(error[0], int) and msg is not None:
            message = f"{msg} (kind {error[0]})"
    else:
        message = text(error)
    return code, repr(error) if message is None else message, data


def _entry(item: Any) -> Any:
    """An endpoint given in code, as an endpoint file's table."""
    if isinstance(item, str):
        return {"addr": item}
    if isinstance(item, Endpoint):
        table: dict[str, Any] = {"addr": item.addr, "weight": item.weight}
        if item.shard is not None:
            table["shard"] = list(item.shard)
        if item.backup is not None:
            table["backup"] = item.backup
        return table
    return item


def _check(
    table: Any, origin: str
) -> tuple[str, int | None, list[Endpoint], list[tuple[int, int, int, int | None]]]:
    """Checks an endpoint table as shoal's Rust client checks an endpoint file; returns the
    balance, the shard count, the endpoints (shard backups not listed appended) and, for
    `shard`, the ranges."""

    def fail(key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{origin}: {message}" if key is None else f"{origin}: {key}: {message}")

    if not isinstance(table, dict):
        raise fail(None, f"expected a table of balance, shard_count and endpoint, got {table!r}")
    for key in table:
        if key not in ("balance", "shard_count", "endpoint"):
            raise fail(key, "unknown key; expected balance, shard_count or endpoint")
    raw = table.get("endpoint", [])
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise fail("endpoint", "expected [[endpoint]] tables")
    if not raw:
        raise fail(None, "no endpoints; add at least one [[endpoint]] table with an addr")

    names = 'expected one of "round_robin", "least_pending", "hashring", "shard"'
    balance = table.get("balance")
    if balance is None:
        balance, given = DEFAULT_BALANCE, False
    else:
        given = True
        if balance not in _BALANCES:
            raise fail("balance", f"{names}, got {_show(balance)}")
    count = table.get("shard_count")
    if balance == "shard":
        if count is None:
            why = "" if given else " (the IDL's rpc_client.mode sharding makes it the default)"
            raise fail(
                "balance",
                f"shard balancing{why} needs shard_count = N (ranges hold values of key % N)",
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise fail("shard_count", f"expected an integer of at least 1, got {_show(count)}")
    elif count is not None:
        raise fail(
            "shard_count", f'shard_count is only used with balance = "shard", not "{balance}"'
        )

    endpoints = []
    for i, entry in enumerate(raw):
        at = f"endpoint[{i}]"
        for key in entry:
            if key not in ("addr", "weight", "shard", "backup"):
                raise fail(f"{at}.{key}", "unknown key; expected addr, weight, shard or backup")
        if "addr" not in entry:
            raise fail(at, 'missing addr; write addr = "host:port" or "unix:PATH"')
        addr = _address(entry["addr"], f"{at}.addr", fail)
        weight = entry.get("weight", 1)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int)
            or not 1 <= weight <= _MAX_WEIGHT
        ):
            raise fail(
                f"{at}.weight", f"expected an integer from 1 to {_MAX_WEIGHT}, got {_show(weight)}"
            )
        shard = entry.get("shard")
        if shard is not None:
            if not (
                isinstance(shard, (list, tuple))
                and len(shard) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shard)
            ):
                raise fail(
                    f"{at}.shard",
                    f"expected [begin, end], two integers of at least 0, got {_show(shard)}",
                )
            shard = (shard[0], shard[1])
        backup = entry.get("backup")
        if backup is not None:
            backup = _address(backup, f"{at}.backup", fail)
        endpoints.append(Endpoint(addr, weight, shard, backup))

    for i, ep in enumerate(endpoints):
        at = f"endpoint[{i}]"
        first = next((j for j, other in enumerate(endpoints[:i]) if other.addr == ep.addr), None)
        if first is not None:
            raise fail(
                f"{at}.addr",
                f"{ep.addr} is listed twice (endpoints {first} and {i}); "
                "list it once and give it a weight",
            )
        if balance != "shard" and ep.shard is not None:
            raise fail(
                f"{at}.shard", f"{ep.addr}: a shard range needs shard balancing, not {balance}"
            )
        if balance != "shard" and ep.backup is not None:
            raise fail(f"{at}.backup", f"{ep.addr}: a backup needs shard balancing, not {balance}")

    ranges = []
    if balance == "shard":
        assert count is not None
        ranges = _check_shards(count, endpoints, fail)
    return balance, count, endpoints, ranges


def _check_shards(
    count: int, endpoints: list[Endpoint], fail: Any
) -> list[tuple[int, int, int, int | None]]:
    """Checks that the ranges lie within `0..count`, do not overlap and cover every value;
    appends each backup that is not an endpoint already to `endpoints`; returns the ranges
    sorted, each with its primary and backup."""
    ranges = []
    for i, ep in enumerate(endpoints):
        at = f"endpoint[{i}]"
        if ep.shard is None:
            raise fail(
                f"{at}.shard",
                f"{ep.addr}: shard balancing needs a range [begin, end] on every endpoint",
            )
        begin, end = ep.shard
        if begin > end:
            raise fail(
                f"{at}.shard",
                f"{ep.addr}: shard range [{begin}, {end}] is backwards; "
                "write [begin, end] with begin <= end",
            )
        if end >= count:
            raise fail(
                f"{at}.shard",
                f"{ep.addr}: shard range [{begin}, {end}] goes past {count - 1}: "
                f"ranges hold values of key % shard_count ({count})",
            )
        if ep.backup == ep.addr:
            raise fail(f"{at}.backup", f"{ep.addr}: an endpoint cannot be its own backup")
        ranges.append((begin, end, i))
    ranges.sort()
    gaps, following, previous = [], 0, None
    for begin, end, i in ranges:
        if previous is not None and begin <= previous[1]:
            raise fail(
                f"endpoint[{i}].shard",
                f"{endpoints[i].addr}: shard range [{begin}, {end}] overlaps "
                f"[{previous[0]}, {previous[1]}] of {endpoints[previous[2]].addr}",
            )
        if begin > following:
            gaps.append(f"[{following}, {begin - 1}]")
        following, previous = end + 1, (begin, end, i)
    if following < count:
        gaps.append(f"[{following}, {count - 1}]")
    if gaps:
        raise fail(
            "shard_count",
            f"shard values {', '.join(gaps)} of 0..{count} are not covered by any endpoint's range",
        )
    routed = []
    for begin, end, i in ranges:
        backup = endpoints[i].backup
        index = None
        if backup is not None:
            index = next((j for j, ep in enumerate(endpoints) if ep.addr == backup), None)
            if index is None:
                endpoints.append(Endpoint(backup))
                index = len(endpoints) - 1
        routed.append((begin, end, i, index))
    return routed


def _show(value: Any) -> str:
    """A value as TOML writes it, for errors about an endpoint table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _address(value: Any, key: str, fail: Any) -> str:
    """`host:port` or `unix:PATH` as shoal reads it; `tcp://host:port` becomes `host:port`."""
    if not isinstance(value, str):
        raise fail(key, f"expected an address string (host:port or unix:PATH), got {_show(value)}")
    if value.startswith("unix:"):
        if value == "unix:":
            raise fail(key, f"address {value!r}: write unix:PATH")
        return value
    addr = value.removeprefix("tcp://")
    host, _, port = addr.rpartition(":")
    if not host or not re.fullmatch(r"\+?[0-9]+", port) or int(port) > 65535:
        raise fail(key, f'address "{addr}": expected host:port (like 127.0.0.1:7000) or unix:PATH')
    return addr


class _Proto:
    """The base of the message classes below."""

    __slots__ = ()


_field = dataclasses.field


def _wire(value: Any) -> Any:
    """A value as it travels: messages become maps of their fields, tuples lists."""
    if isinstance(value, _Proto):
        return value.to_dict()  # type: ignore[attr-defined]
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


def _float(value: Any) -> Any:
    """An int given for a float field travels as a float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _map(data: Any, proto: str) -> dict[Any, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"{proto}: expected a map of its fields, got {type(data).__name__}")
    return {k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v for k, v in data.items()}
