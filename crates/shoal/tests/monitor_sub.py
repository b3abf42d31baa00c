"""A third-party subscriber of shoal's monitor feed (pyzmq on libzmq, and msgpack).

Usage: monitor_sub.py ENDPOINT COUNT. Subscribes to `shoal.status` at ENDPOINT, receives
COUNT snapshots, decodes each (JSON when the payload starts with `{`, else MessagePack) and
prints one JSON line per snapshot with the fields the Rust test checks. Gives up after 30 s.
"""

import json
import sys

import msgpack
import zmq


def main():
    endpoint, count = sys.argv[1], int(sys.argv[2])
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, 30_000)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"shoal.status")
    for _ in range(count):
        frames = sub.recv_multipart()
        if len(frames) != 2:
            sys.exit(f"expected 2 frames, got {len(frames)}")
        topic, payload = frames
        if payload[:1] == b"{":
            kind, status = "json", json.loads(payload.decode("utf-8"))
        else:
            kind, status = "msgpack", msgpack.unpackb(payload, raw=False)
        print(
            json.dumps(
                {
                    "topic": topic.decode("ascii"),
                    "format": kind,
                    "name": status["name"],
                    "pid": status["pid"],
                    "state": status["state"],
                    "uptime_secs": status["uptime_secs"],
                    "monitor_addr": status["monitor_addr"],
                    "greeting": status["config"]["hello"]["greeting"],
                    "methods": status["methods"],
                }
            ),
            flush=True,
        )
    sub.close()
    context.term()


if __name__ == "__main__":
    main()
