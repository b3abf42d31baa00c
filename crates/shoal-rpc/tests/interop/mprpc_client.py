"""msgpack-rpc-python (PyPI msgpack-rpc-python, old msgpack and tornado 4) as a client of a
shoal server (TestService), for tests/interop.rs.

Usage: mprpc_client.py HOST:PORT NOTIFICATIONS

This peer speaks the original MessagePack spec: every string, bytes included, goes out as
raw `str`. Prints one JSON object per line: {"check": NAME, ...}.
"""

import json
import sys
import time

import msgpackrpc
from msgpackrpc.error import RPCError


def report(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def main(addr, notifications):
    host, port = addr.rsplit(":", 1)
    client = msgpackrpc.Client(
        msgpackrpc.Address(host, int(port)), timeout=10, unpack_encoding="utf-8"
    )

    values = ["héllo", "", 0, -7, 2**40, 1.5, None, True, [1, "two", [3]], {"k": [1, 2]}]
    for v in values:
        got = client.call("echo", v)
        ok = got == v and type(got) is type(v)
        report("echo", value=repr(v), ok=ok, got=repr(got))

    # Bytes travel as raw str with invalid UTF-8: the reply shows what shoal made of them.
    got = client.call("echo", b"\x00\xffraw")
    report("raw_bytes", got=repr(got), ok=got == b"\x00\xffraw")

    for i in range(notifications):
        client.notify("record", i)
    got = client.call("echo", "after notifications")
    report("after_notifications", ok=got == "after notifications")
    # Queued notifications of a peer that goes away are left undone: wait until the server
    # has handled them all before going on to close.
    deadline = time.monotonic() + 30
    while client.call("recorded") < notifications and time.monotonic() < deadline:
        time.sleep(0.001)

    futures = [client.call_async("echo", i) for i in range(100)]
    got = [f.get() for f in futures]
    report("pipelined", count=len(got), ok=got == list(range(100)))

    for method in ["fail", "no_such_method"]:
        try:
            got = client.call(method)
            report("error", method=method, raised=False, got=repr(got))
        except RPCError as e:
            payload = e.args[0] if e.args else None
            if isinstance(payload, dict):
                payload = {str(k): v for k, v in payload.items()}
            else:
                payload = {"unexpected": repr(payload)}
            report("error", method=method, raised=True, payload=payload)

    client.close()
    report("done", ok=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
