"""Drives the generated Python client (`shop_client.py`) against the Rust servers that
tests/python_client.rs starts. Usage: python_client.py SCENARIO DIR ADDR...

Checks that need nothing but Python are asserted here; what the Rust side must compare (which
server answered, the ring) is printed as one JSON object per line. A line {"wait": WHAT}
asks the test to do WHAT and write a line back before the script goes on.
"""

import json
import socket
import sys
import time

scenario, directory, *addrs = sys.argv[1:]
sys.path.insert(0, directory)

import shop_client as shop  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def wait(what):
    emit(wait=what)
    assert sys.stdin.readline().strip() == "go", what


def raises(kind, text, f):
    try:
        f()
    except kind as e:
        assert text in str(e), f"{text!r} not in {str(e)!r}"
        return e
    raise AssertionError(f"no {kind.__name__} containing {text!r}")


def calls():
    """Typed calls, a notification, errors, and endpoint checks; a server on TCP and one on a
    Unix socket."""
    client = shop.ShopClient([addrs[0]])
    assert client.echo(shop.Echomsg(value="hi")) == {"server": addrs[0], "value": "hi"}
    # A proto may be given as a plain map.
    assert client.echo({"value": "as a map"})["value"] == "as a map"

    order = shop.Order(
        id=7,
        lead=shop.Item(name="lead", tags=["a", "b"], price=2),
        items=[shop.Item(name="x", price=1.5), shop.Item(name="y", tags=["z"])],
        by_name={"w": shop.Item(name="w", price=3)},
        weights=(1, 2.5),
        extra={"any": [1, "two", None, {"k": True}]},
        paid=True,
        from_="python",
    )
    wire = order.to_dict()
    assert wire["from"] == "python" and wire["lead"]["price"] == 2.0, wire
    assert isinstance(wire["lead"]["price"], float) and wire["weights"] == [1.0, 2.5], wire
    answer = client.place(order, "the key")
    assert answer["key"] == "the key", answer
    back = shop.Order.from_dict(answer["order"])
    assert back == order, (back, order)
    assert isinstance(back.weights, tuple) and isinstance(back.lead, shop.Item), back
    # Missing fields keep their defaults; unknown keys are ignored.
    assert shop.Order.from_dict({"id": 1, "other": 2}) == shop.Order(id=1)

    assert client.record("hello from python") is None
    emit(step="recorded")

    error = raises(
        shop.RemoteError, "out of stock (code 1234)", lambda: client.fail(1234, "out of stock")
    )
    assert (error.code, error.message, error.data) == (1234, "out of stock", [1, 2]), vars(error)
    assert error.error == {"code": 1234, "message": "out of stock", "data": [1, 2]}, error.error
    assert isinstance(error, shop.RpcError)
    # The server is still there after an error object.
    assert client.echo(shop.Echomsg(value="again"))["value"] == "again"

    # A server that never answers: the deadline, and the connection given up.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    quiet = shop.ShopClient([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.2)
    started = time.monotonic()
    raises(shop.DeadlineExceeded, "deadline of 0.2s exceeded", lambda: quiet.echo(shop.Echomsg()))
    assert time.monotonic() - started >= 0.2
    silent.close()
    # Nobody listening: never sent.
    raises(shop.NotSent, "not sent", lambda: quiet.echo(shop.Echomsg()))

    with shop.ShopClient([addrs[0]], key="pinned") as pinned:
        assert pinned.echo(shop.Echomsg(value="k"), timeout=5)["value"] == "k"
    # A server on a Unix socket.
    assert addrs[1].startswith("unix:"), addrs
    assert shop.ShopClient([addrs[1]]).echo(shop.Echomsg())["server"] == addrs[1]
    # Round robin takes weights as the Rust client does: round r visits the weights above r.
    both = [addrs[0], shop.Endpoint(addrs[1], weight=2)]
    turns = shop.ShopClient(both, balance="round_robin")
    served = [turns.echo(shop.Echomsg())["server"] for _ in range(6)]
    assert served == [addrs[0], addrs[1], addrs[1]] * 2, served
    spread = shop.ShopClient(both, balance="least_pending")
    assert {spread.echo(shop.Echomsg())["server"] for _ in range(4)} <= set(addrs)

    endpoint_checks()
    emit(step="done")


def endpoint_checks():
    """The endpoint checks of shoal's Rust client, with errors naming the file and key."""
    two = '[[endpoint]]\naddr = "a:1"\n[[endpoint]]\naddr = "b:1"\n'

    def shard(a, b):
        return (
            f'balance = "shard"\nshard_count = 8\n[[endpoint]]\naddr = "a:1"\nshard = {a}\n'
            f'[[endpoint]]\naddr = "b:1"\nshard = {b}\n'
        )

    path = f"{directory}/bad.toml"
    cases = [
        ("", f"{path}: no endpoints"),
        (
            'balance = "random"\n[[endpoint]]\naddr = "a:1"\n',
            f'{path}: balance: expected one of "round_robin", "least_pending", "hashring", "shard", got "random"',
        ),
        (
            'balance = "shard"\n[[endpoint]]\naddr = "a:1"\nshard = [0, 0]\n',
            f"{path}: balance: shard balancing needs shard_count = N",
        ),
        (
            f'balance = "shard"\nshard_count = 0\n{two}',
            f"{path}: shard_count: expected an integer of at least 1, got 0",
        ),
        (
            f"shard_count = 4\n{two}",
            f'{path}: shard_count: shard_count is only used with balance = "shard", not "hashring"',
        ),
        ("[[endpoint]]\nweight = 2\n", f"{path}: endpoint[0]: missing addr"),
        (
            '[[endpoint]]\naddr = "a:1"\n[[endpoint]]\naddr = "nope"\n',
            f'{path}: endpoint[1].addr: address "nope": expected host:port',
        ),
        ("[[endpoint]]\naddr = 5\n", f"{path}: endpoint[0].addr: expected an address string"),
        (
            '[[endpoint]]\naddr = "a:1"\nweight = 0\n',
            f"{path}: endpoint[0].weight: expected an integer from 1 to 100, got 0",
        ),
        (
            '[[endpoint]]\naddr = "a:1"\nweight = true\n',
            f"{path}: endpoint[0].weight: expected an integer from 1 to 100, got true",
        ),
        ('[[endpoint]]\naddr = "a:1"\nwieght = 2\n', f"{path}: endpoint[0].wieght: unknown key"),
        ('colour = "red"\n[[endpoint]]\naddr = "a:1"\n', f"{path}: colour: unknown key"),
        ('[[endpoint]\naddr = "a:1"\n', f"{path}: "),
        (
            f'{two}[[endpoint]]\naddr = "a:1"\n',
            f"{path}: endpoint[2].addr: a:1 is listed twice (endpoints 0 and 2)",
        ),
        (
            '[[endpoint]]\naddr = "a:1"\nshard = [0, 1]\n',
            f"{path}: endpoint[0].shard: a:1: a shard range needs shard balancing, not hashring",
        ),
        (
            '[[endpoint]]\naddr = "a:1"\nbackup = "b:1"\n',
            f"{path}: endpoint[0].backup: a:1: a backup needs shard balancing, not hashring",
        ),
        (
            shard("[0, 3]", "[5]"),
            f"{path}: endpoint[1].shard: expected [begin, end], two integers of at least 0, got [5]",
        ),
        (
            shard("[0, 3]", "[4, 8]"),
            f"{path}: endpoint[1].shard: b:1: shard range [4, 8] goes past 7",
        ),
        (
            shard("[0, 3]", "[7, 4]"),
            f"{path}: endpoint[1].shard: b:1: shard range [7, 4] is backwards",
        ),
        (
            shard("[0, 4]", "[4, 7]"),
            f"{path}: endpoint[1].shard: b:1: shard range [4, 7] overlaps [0, 4] of a:1",
        ),
        (
            shard("[1, 2]", "[4, 6]"),
            f"{path}: shard_count: shard values [0, 0], [3, 3], [7, 7] of 0..8 are not covered",
        ),
        (
            'balance = "shard"\nshard_count = 2\n[[endpoint]]\naddr = "a:1"\nshard = [0, 1]\nbackup = "a:1"\n',
            f"{path}: endpoint[0].backup: a:1: an endpoint cannot be its own backup",
        ),
    ]
    for text, expected in cases:
        with open(path, "w") as f:
            f.write(text)
        raises(shop.ConfigError, expected, lambda: shop.ShopClient(path))
    raises(
        shop.ConfigError,
        f"read endpoint file {directory}/missing.toml",
        lambda: shop.ShopClient(f"{directory}/missing.toml"),
    )
    raises(
        shop.ConfigError,
        "endpoints: endpoint[0].weight: expected an integer from 1 to 100, got 101",
        lambda: shop.ShopClient([shop.Endpoint("a:1", weight=101)]),
    )
    raises(
        shop.ConfigError,
        f"{path}: balance and shard_count come from the endpoint file",
        lambda: shop.ShopClient(path, balance="shard"),
    )
    raises(
        ValueError,
        "shard balancing needs an integer key, not the text 'x'",
        lambda: shop.ShopClient(
            [{"addr": "a:1", "shard": [0, 0]}], balance="shard", shard_count=1, key="x"
        ),
    )

    # Endpoints from code: strings, Endpoint values and dicts, the ranges checked the same way.
    mixed = shop.Endpoints.of(
        [shop.Endpoint("a:1", shard=(0, 3), backup="c:1"), {"addr": "tcp://b:1", "shard": [4, 7]}],
        balance="shard",
        shard_count=8,
    )
    assert [e.addr for e in mixed.endpoints] == ["a:1", "b:1", "c:1"], mixed.endpoints
    assert mixed.route(3) == ["a:1", "c:1"] and mixed.route(12) == ["b:1"], mixed
    client = shop.ShopClient(mixed)
    raises(
        ValueError,
        "shard balancing needs an integer key: pass key=",
        lambda: client.echo(shop.Echomsg()),
    )
    raises(TypeError, "a key is an int or a str", lambda: client.echo(shop.Echomsg(), key=1.5))
    raises(
        ValueError,
        "an integer key is from 0 to 2**64-1",
        lambda: client.echo(shop.Echomsg(), key=-1),
    )

    # An IDL whose rpc_client.mode is sharding makes shard the default for files without one.
    shop.DEFAULT_BALANCE = "shard"
    with open(path, "w") as f:
        f.write('[[endpoint]]\naddr = "a:1"\nshard = [0, 0]\n')
    raises(
        shop.ConfigError,
        f"{path}: balance: shard balancing (the IDL's rpc_client.mode sharding makes it the default) needs shard_count",
        lambda: shop.Endpoints.load(path),
    )
    with open(path, "w") as f:
        f.write('shard_count = 1\n[[endpoint]]\naddr = "a:1"\nshard = [0, 0]\n')
    assert shop.Endpoints.load(path).balance == "shard"
    shop.DEFAULT_BALANCE = "hashring"


def hashring():
    """The ring as Rust builds it, offline and over the wire; then one server stopped."""
    path = f"{directory}/ring.toml"
    endpoints = shop.Endpoints.load(path)
    assert endpoints.balance == "hashring", endpoints  # the IDL's default: the file has none
    keys = list(range(1000)) + [f"user-{i}" for i in range(200)] + [2**64 - 1]
    emit(step="routes", routes=[[key, endpoints.route(key)] for key in keys])

    client = shop.ShopClient(path)
    wire = [
        (key, client.echo(shop.Echomsg(value=str(key)), key=key)["server"]) for key in keys[:200:3]
    ]
    emit(step="served", served=wire)
    # Without a key a client sticks to one server; a pinned key routes every call.
    unkeyed = {client.echo(shop.Echomsg())["server"] for _ in range(20)}
    assert len(unkeyed) == 1, unkeyed
    pinned = shop.ShopClient(path, key=7)
    emit(step="pinned", servers=sorted({pinned.echo(shop.Echomsg())["server"] for _ in range(5)}))
    # Notifications are routed like calls.
    for key in (1, 2, 3):
        client.record(f"ring {key}", key=key)
    emit(step="recorded")

    wait("stop the first server")
    wire = [(key, client.echo(shop.Echomsg(), key=key)["server"]) for key in keys[:200:3]]
    emit(step="served after stop", served=wire)


def sharding():
    """Shard ranges, and the backup while a primary is down, until it is back."""
    client = shop.ShopClient(f"{directory}/shard.toml")
    served = lambda: [(key, client.echo(shop.Echomsg(), key=key)["server"]) for key in range(16)]  # noqa: E731
    emit(step="served", served=served())
    wait("stop the first primary")
    emit(step="served after stop", served=served())
    wait("start the first primary again")
    # Back once its backoff has passed and a probe call finds it.
    deadline = time.monotonic() + 20
    while client.echo(shop.Echomsg(), key=0)["server"] != addrs[0]:
        assert time.monotonic() < deadline, "the restarted primary never took its range back"
        time.sleep(0.01)
    emit(step="served after restart", served=served())


{"calls": calls, "hashring": hashring, "shard": sharding}[scenario]()
