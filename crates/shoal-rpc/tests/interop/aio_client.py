"""aio-msgpack-rpc as a client of a shoal server (TestService), for tests/interop.rs.

Usage: aio_client.py HOST:PORT NOTIFICATIONS

Prints one JSON object per line: {"check": NAME, ...}. The Rust test asserts on them.
"""

import asyncio
import json
import sys
import time

import aio_msgpack_rpc
from aio_msgpack_rpc.error import RPCResponseError


def report(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def same(a, b):
    """Equal with the same types all the way down (True is not 1, bytes are not str)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def error_payload(e):
    """The error object a shoal server sent, made JSON-safe."""
    payload = e.args[0] if e.args else None
    if isinstance(payload, dict):
        return {str(k): v for k, v in payload.items()}
    return {"unexpected": repr(payload)}


async def main(addr, notifications):
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    client = aio_msgpack_rpc.Client(reader, writer, response_timeout=10)

    values = [
        "héllo wörld",
        "",
        0,
        -7,
        2**40,
        -(2**40),
        1.5,
        None,
        True,
        [1, "two", [3.25, None]],
        {"k": [1, 2], "nested": {"n": None}},
        b"\x00\xff binary",
        "x" * 70000,
    ]
    for v in values:
        got = await client.call("echo", v)
        report("echo", value=repr(v)[:60], ok=same(got, v), got=repr(got)[:60])

    for i in range(notifications):
        await client.notify("record", i)
    # The server reads in order: once this call is answered every notification was read.
    got = await client.call("echo", "after notifications")
    report("after_notifications", ok=got == "after notifications")
    # Queued notifications of a peer that goes away are left undone: wait until the server
    # has handled them all before going on to close.
    deadline = time.monotonic() + 30
    while await client.call("recorded") < notifications and time.monotonic() < deadline:
        await asyncio.sleep(0.001)

    got = await asyncio.gather(*(client.call("echo", i) for i in range(200)))
    report("pipelined", count=len(got), ok=got == list(range(200)))

    for method in ["fail", "no_such_method"]:
        try:
            got = await client.call(method)
            report("error", method=method, raised=False, got=repr(got))
        except RPCResponseError as e:
            report("error", method=method, raised=True, payload=error_payload(e))

    # aio's client numbers requests modulo 2^32: start just below the wrap so ids at and
    # above 2^31 (and the wrap back to 0) go to the server, one at a time and concurrently.
    client._next_msgid = 2**32 - 5
    sequential = [await client.call("echo", i) for i in range(3)]
    high_ids = [2**32 - 5 + i for i in range(3)]
    concurrent = await asyncio.gather(*(client.call("echo", i) for i in range(6)))
    report(
        "high_msgid",
        ids=high_ids,
        next_id=client._next_msgid,
        ok=sequential == [0, 1, 2] and concurrent == list(range(6)),
    )

    client.close()
    report("done", ok=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2])), timeout=30))
