"""A client of `shoal queue`, the durable fan-out queue, over plain MessagePack-RPC.

Needs only `msgpack` from PyPI (``pip install msgpack``); one file, so copy it next to your
code. Every call blocks until the queue answers and raises `QueueError` (with the queue's
error code, message and data) when it refuses.

    from shoal_queue import Queue
    q = Queue("127.0.0.1:7450")          # or "unix:/run/queue.sock"; token=... for TLS queues
    q.create_topic("jobs", max_bytes=512 << 20)
    q.register("jobs", "billing")
    seqs = q.publish_batch("jobs", [b"a", b"b"])
    for m in q.fetch("jobs", "billing", max=10, wait=5.0):
        print(m.seq, m.data, m.redelivered)
        q.ack("jobs", "billing", [m.seq])

A `Queue` is one connection with one call in flight at a time; use one per thread. TLS is not
spoken here: reach a queue on loopback or a Unix socket (or through a TLS tunnel).
"""

import socket
from dataclasses import dataclass
from typing import Iterable, List, Optional

import msgpack

__all__ = ["Queue", "Message", "QueueError", "FULL", "TOO_LARGE", "NO_TOPIC",
           "NO_SUBSCRIPTION", "INVALID", "UNAUTHORIZED", "CLOSED"]

# The queue's error codes (shoal_api::queue::codes).
FULL = 1001
TOO_LARGE = 1002
NO_TOPIC = 1003
NO_SUBSCRIPTION = 1004
INVALID = 1005
UNAUTHORIZED = 1006
CLOSED = 1007

_REQUEST, _RESPONSE, _NOTIFICATION = 0, 1, 2


class QueueError(Exception):
    """The queue refused a call: `code` is one of the constants above (or shoal-rpc's own),
    `message` names what is at fault, `data` carries details (for FULL: topic and holder)."""

    def __init__(self, code, message, data=None):
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


@dataclass
class Message:
    seq: int
    data: bytes
    redelivered: bool


class Queue:
    """One connection to a queue at `addr`: "host:port" or "unix:PATH"."""

    def __init__(self, addr: str, token: Optional[str] = None, timeout: float = 30.0):
        self._token = token
        self._timeout = timeout
        if addr.startswith("unix:"):
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = addr[len("unix:"):]
        else:
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"queue address {addr!r}: expected host:port or unix:PATH")
            self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                       socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        self._sock.settimeout(timeout)
        self._sock.connect(target)
        if self._sock.family != socket.AF_UNIX:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
        self._next_id = 0

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def create_topic(self, topic: str, max_bytes: Optional[int] = None) -> None:
        """Creates `topic`; again with the same `max_bytes` (or none) changes nothing."""
        self._call("queue.create_topic", topic=topic, max_bytes=max_bytes)

    def register(self, topic: str, sub: str) -> None:
        """Registers a durable subscription: it gets every message published from now on."""
        self._call("queue.register", topic=topic, sub=sub)

    def unregister(self, topic: str, sub: str) -> None:
        """Unregisters a subscription, releasing what only it still held."""
        self._call("queue.unregister", topic=topic, sub=sub)

    def publish(self, topic: str, message: bytes) -> int:
        """Publishes one message; answers its sequence number once it is on disk."""
        return self.publish_batch(topic, [message])[0]

    def publish_batch(self, topic: str, messages: Iterable[bytes]) -> List[int]:
        """Publishes several messages in one call, all or none; answers their sequence
        numbers once they are on disk."""
        payloads = [m.encode() if isinstance(m, str) else bytes(m) for m in messages]
        return self._call("queue.publish", topic=topic, messages=payloads)["seqs"]

    def fetch(self, topic: str, sub: str, max: int = 1, wait: float = 0.0) -> List[Message]:
        """Up to `max` messages for `sub`, waiting up to `wait` seconds while there are none."""
        wait_ms = int(wait * 1000)
        answer = self._call("queue.fetch", topic=topic, sub=sub, max=max, wait_ms=wait_ms,
                            _timeout=self._timeout + wait)
        return [Message(m["seq"], m["data"], m["redelivered"]) for m in answer]

    def ack(self, topic: str, sub: str, seqs: Iterable[int]) -> None:
        self._call("queue.ack", topic=topic, sub=sub, seqs=list(seqs))

    def nack(self, topic: str, sub: str, seqs: Iterable[int], delay: float = 0.0) -> None:
        """Hands messages back, to be delivered again after `delay` seconds."""
        self._call("queue.nack", topic=topic, sub=sub, seqs=list(seqs),
                   delay_ms=int(delay * 1000))

    def stats(self, topic: Optional[str] = None) -> List[dict]:
        """Per topic: bytes, max_bytes, first_seq, last_seq, waiting, syncs, and subs (name,
        lag, unacked, redelivered, ack_floor)."""
        return self._call("queue.stats", topic=topic)

    def _call(self, method, _timeout=None, **fields):
        request = {k: v for k, v in fields.items() if v is not None}
        if self._token is not None:
            request["token"] = self._token
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        msgid = self._next_id
        self._sock.settimeout(_timeout or self._timeout)
        self._sock.sendall(msgpack.packb([_REQUEST, msgid, method, [request]],
                                         use_bin_type=True))
        while True:
            frame = self._read()
            # A notification (shoal.goaway when the queue closes) is not an answer.
            if frame[0] == _RESPONSE and frame[1] == msgid:
                _, _, error, result = frame
                if error is not None:
                    if isinstance(error, dict):
                        raise QueueError(error.get("code"), error.get("message"),
                                         error.get("data"))
                    raise QueueError(None, str(error))
                return result

    def _read(self):
        while True:
            for frame in self._unpacker:
                return frame
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the queue closed the connection")
            self._unpacker.feed(chunk)
