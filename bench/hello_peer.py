"""The peer for bench/hello-startup.sh: the hello service written the usual Python way, an
asyncio server built with PyPI aio-msgpack-rpc. It reads the same TOML as shoal's hello
example and answers the same calls: `shoal.ping` -> "pong", `greet(name)` -> "<greeting>, <name>".

    python bench/hello_peer.py --config FILE
"""

import asyncio
import signal
import sys
import tomllib
from types import SimpleNamespace

import aio_msgpack_rpc


async def main(path):
    with open(path, "rb") as f:
        config = tomllib.load(f)
    host, port = config["rpc"]["listen"].rsplit(":", 1)
    greeting = config.get("hello", {}).get("greeting", "Hello")

    # aio-msgpack-rpc looks methods up with getattr, and "shoal.ping" is no Python identifier.
    handler = SimpleNamespace(**{"shoal.ping": lambda: "pong", "greet": lambda name: f"{greeting}, {name}"})
    server = await asyncio.start_server(aio_msgpack_rpc.Server(handler), host, int(port))

    # Close on SIGTERM and exit 0, as shoal does, so both sides are stopped the same way.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        sys.exit("usage: hello_peer.py --config FILE")
    asyncio.run(main(sys.argv[2]))
