"""Drives every call of shoal_queue.py against the queue at argv[1], asserting each answer;
the Rust test (tests/python.rs) then reads what it left through the Rust client."""

import sys

from shoal_queue import FULL, NO_TOPIC, Queue, QueueError


def expect_error(code, call, *args):
    try:
        call(*args)
    except QueueError as e:
        assert e.code == code, (e.code, e.message)
        return e
    raise AssertionError(f"{call.__name__}{args} succeeded")


with Queue(sys.argv[1]) as q:
    q.create_topic("py", max_bytes=1 << 16)
    q.create_topic("py", max_bytes=1 << 16)
    q.register("py", "worker")
    q.register("py", "keeper")
    assert q.publish("py", b"one") == 1
    assert q.publish_batch("py", [b"two", "three"]) == [2, 3]

    got = q.fetch("py", "worker", max=2)
    assert [(m.seq, m.data, m.redelivered) for m in got] == [(1, b"one", False), (2, b"two", False)], got
    q.ack("py", "worker", [1])
    q.nack("py", "worker", [2], delay=0.05)
    again = q.fetch("py", "worker", max=10, wait=5.0)
    seqs = sorted(m.seq for m in again)
    assert 2 in seqs or 3 in seqs, again
    while len(seqs) < 2:
        seqs += [m.seq for m in q.fetch("py", "worker", max=10, wait=5.0)]
    assert sorted(seqs) == [2, 3], seqs
    q.ack("py", "worker", seqs)
    # An empty fetch waits its time out.
    assert q.fetch("py", "worker", max=1, wait=0.05) == []

    [stats] = q.stats("py")
    assert (stats["topic"], stats["first_seq"], stats["last_seq"]) == ("py", 1, 3), stats
    subs = {s["name"]: s for s in stats["subs"]}
    assert subs["worker"]["lag"] == 0 and subs["keeper"]["lag"] == 3, subs
    assert stats["syncs"] >= 2, stats

    e = expect_error(NO_TOPIC, q.publish, "nope", b"x")
    assert "no topic nope" in e.message, e.message
    # keeper never acks: the topic fills, and the error names it.
    while True:
        try:
            q.publish_batch("py", [b"z" * 2000] * 4)
        except QueueError as e:
            assert e.code == FULL and e.data["holder"] == "keeper", (e.code, e.data)
            break
    q.unregister("py", "worker")
    print("python client: ok")
