"""Fuzzing a running `pushplat dev` (two real processes: auth off, and auth on with API keys).

Hypothesis generates ClientFrame sequences and SendRequests of valid shape with hostile values
(empty, blank, huge, control and non-ASCII ids; unknown enum values; out-of-range TTLs; label
floods; reused idempotency keys; oversized batches and acks), plus raw random bytes on device
streams and Send calls: a few thousand calls in all. It passes when every call ends OK or with
a status from the README's error table, both processes stay up, and a bystander device keeps
receiving a steady trickle of messages the whole time.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, push_pb2, push_pb2_grpc

from pushplat.auth import mint_token
from tests.helpers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "fuzz-secret-0123456789abcdef0123456789"
API_KEY = "fuzz-key"
CALL_TIMEOUT = 10.0  # a client-side deadline: hitting it means the server hung, which fails the test
# Examples per kind; the whole module stays well under a minute on the 2-core CI machine.
EXAMPLES = {"frames": 900, "tokens": 500, "sends": 900, "raw_stream": 300, "raw_send": 200, "topics": 300}


def error_table_statuses() -> set[str]:
    """The gRPC status names in the README's Errors table: the only non-OK answers allowed."""
    text = README.read_text()
    section = text.split("\n## Errors", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    names = {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row)}
    known = {code.name for code in grpc.StatusCode}
    assert names and names <= known, names
    return names


ALLOWED = error_table_statuses()


# -- the processes and the bystander ----------------------------------------------------------------


@dataclass
class Dev:
    proc: subprocess.Popen
    edge: str
    api: str
    log: Path

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        for address in (self.edge, self.api):
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    return False
        return True


def start_dev(log: Path, *extra: str) -> Dev:
    edge, api, delivery = free_port(), free_port(), free_port()
    args = ["dev", "--edge-port", str(edge), "--api-port", str(api), "--delivery-port", str(delivery)]
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pushplat", *args, *extra], stdout=out, stderr=out)
    dev = Dev(proc, f"127.0.0.1:{edge}", f"127.0.0.1:{api}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if dev.alive():
                return dev
        except grpc.RpcError:
            pass
        time.sleep(0.1)  # polling a process's start-up, bounded by the deadline
    proc.kill()
    pytest.fail(f"pushplat dev did not start:\n{log.read_text()[-3000:]}")


@dataclass
class Bystander:
    """A device that receives one message every 50 ms throughout the fuzzing; records delays."""

    dev: Dev
    hello: edge_pb2.Hello
    api_metadata: tuple[tuple[str, str], ...]
    device_id: str
    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    welcomed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._receive, daemon=True).start()
        assert self.welcomed.wait(10), self.errors
        threading.Thread(target=self._send, daemon=True).start()

    def _frames(self, acks: queue.Queue) -> Iterator[edge_pb2.ClientFrame]:
        yield edge_pb2.ClientFrame(hello=self.hello)
        while not self.stop.is_set():
            try:
                ids = acks.get(timeout=0.5)
            except queue.Empty:
                yield edge_pb2.ClientFrame(ping=edge_pb2.Ping())
                continue
            yield edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=ids))

    def _receive(self) -> None:
        acks: queue.Queue = queue.Queue()
        channel = grpc.insecure_channel(self.dev.edge)
        try:
            for frame in edge_pb2_grpc.EdgeStub(channel).Connect(self._frames(acks)):
                if frame.HasField("welcome"):
                    self.welcomed.set()
                elif frame.HasField("pushes"):
                    now = time.monotonic()
                    for message in frame.pushes.messages:
                        self.received.setdefault(message.message_id, now)
                    acks.put([m.message_id for m in frame.pushes.messages])
                elif frame.HasField("go_away"):
                    self.errors.append(f"bystander got a GoAway: {frame.go_away}")
        except grpc.RpcError as exc:
            if not self.stop.is_set():
                self.errors.append(f"bystander stream ended: {exc.code().name} {exc.details()}")
        finally:
            channel.close()

    def _send(self) -> None:
        with grpc.insecure_channel(self.dev.api) as channel:
            stub = push_pb2_grpc.PushStub(channel)
            while not self.stop.wait(0.05):
                try:
                    reply = stub.Send(
                        push_pb2.SendRequest(device_id=self.device_id, payload=b"tick"),
                        metadata=self.api_metadata,
                        timeout=CALL_TIMEOUT,
                    )
                    self.sent[reply.message_id] = time.monotonic()
                except grpc.RpcError as exc:
                    self.errors.append(f"bystander's sender failed: {exc.code().name} {exc.details()}")

    def check(self) -> None:
        """Every tick sent more than 3 s ago has arrived, and none took longer than 3 s."""
        assert not self.errors, self.errors[:5]
        now = time.monotonic()
        late = [m for m, at in self.sent.items() if m not in self.received and now - at > 3.0]
        slow = [self.received[m] - at for m, at in self.sent.items() if m in self.received]
        assert not late, f"{len(late)} ticks never reached the bystander"
        assert not slow or max(slow) < 3.0, f"a tick took {max(slow):.2f}s to reach the bystander"


@pytest.fixture(scope="module")
def devs(tmp_path_factory) -> Iterator[dict[str, tuple[Dev, Bystander]]]:
    logs = tmp_path_factory.mktemp("fuzz")
    # Generous connect budgets: the fuzzer opens a few thousand streams in well under a minute.
    common = ["--max-connects-per-second", "100000", "--hello-timeout-seconds", "5"]
    open_dev = start_dev(logs / "open.log", *common)
    secured = start_dev(logs / "secured.log", *common, "--auth-secret", SECRET, "--api-key", f"fuzz:{API_KEY}")
    bystanders = {}
    for name, dev in (("open", open_dev), ("secured", secured)):
        device = BYSTANDER
        if name == "open":
            hello, metadata = edge_pb2.Hello(user_id=f"user-{device}", device_id=device), ()
        else:
            hello = edge_pb2.Hello(token=mint_token(SECRET, f"user-{device}", device, ttl_seconds=3600))
            metadata = (("authorization", f"Bearer {API_KEY}"),)
        bystander = Bystander(dev, hello, metadata, device)
        bystander.start()
        bystanders[name] = (dev, bystander)
    try:
        yield bystanders
    finally:
        for _, bystander in bystanders.values():
            bystander.stop.set()
        for channel in CHANNELS.values():
            channel.close()
        CHANNELS.clear()
        for dev, _ in bystanders.values():
            dev.proc.kill()
            dev.proc.wait(10)


OUTCOMES: Counter = Counter()


def record(kind: str, code: grpc.StatusCode, details: str) -> None:
    OUTCOMES[(kind, code.name)] += 1
    allowed = code == grpc.StatusCode.OK or code.name in ALLOWED
    assert allowed, f"{kind}: {code.name} is not in the error table: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert "no Hello within" in details, f"{kind}: the call hung until the client's deadline: {details}"
    assert len(details) < 2_000, f"{kind}: an error message echoes a hostile value: {details[:200]}..."
    for leak in ("Traceback", "Exception", "codec can't", "Unexpected <class"):
        assert leak not in details, f"{kind}: a Python internal leaked: {details}"


# -- strategies ------------------------------------------------------------------------------------

SPECIAL = ["", " ", "\t\n", "\x00", "{", "}", "%", "a" * 128, "a" * 129, "é" * 65, "x" * 5000, "ユーザー", "\u2028"]
text = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40),
    st.integers(0, 3000).map(lambda n: "z" * n),
)
# The bystanders' device id is in the mix: taking it over must fail (its user is not).
BYSTANDER = f"bystander-{uuid.uuid4().hex}"
ids = st.one_of(
    st.from_regex(r"[a-z0-9_-]{1,24}", fullmatch=True),
    st.uuids().map(str),
    st.just(BYSTANDER),
    text,
)
int64 = st.one_of(
    st.integers(0, 3600), st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5), st.integers(0, 40 * 24 * 3600)
)
enum_value = st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1))
labels = st.one_of(
    st.dictionaries(st.from_regex(r"[a-z]{1,10}", fullmatch=True), st.from_regex(r"[a-z0-9]{0,10}", fullmatch=True)),
    st.dictionaries(text, text, max_size=4),
    st.integers(0, 40).map(lambda n: {f"k{i}": "v" for i in range(n)}),
)
hello = st.builds(edge_pb2.Hello, token=text, user_id=ids, device_id=ids, client_version=text)
ack = st.one_of(
    st.lists(ids, max_size=20),
    st.integers(0, 1_200).map(lambda n: [f"id-{i}" for i in range(n)]),
).map(lambda message_ids: edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=message_ids)))
# Topic names: valid ones (so that subscriptions happen), and anything at all.
topic = st.one_of(st.from_regex(r"[A-Za-z0-9_.~%-]{1,20}", fullmatch=True), text)
topic_lists = st.one_of(
    st.lists(topic, max_size=6),
    st.integers(95, 130).map(lambda n: [f"t{i}" for i in range(n)]),  # around the 100-per-frame limit
)
topic_frame = st.one_of(
    st.builds(edge_pb2.Subscribe, topics=topic_lists, request_id=text).map(lambda m: edge_pb2.ClientFrame(subscribe=m)),
    st.builds(edge_pb2.Unsubscribe, topics=topic_lists, request_id=text).map(
        lambda m: edge_pb2.ClientFrame(unsubscribe=m)
    ),
)
frame = st.one_of(
    hello.map(lambda h: edge_pb2.ClientFrame(hello=h)),
    ack,
    topic_frame,
    st.just(edge_pb2.ClientFrame(ping=edge_pb2.Ping())),
    st.just(edge_pb2.ClientFrame()),
)
# Usually a Hello first, as a client would; sometimes anything.
frames = st.one_of(
    st.tuples(hello.map(lambda h: edge_pb2.ClientFrame(hello=h)), st.lists(frame, max_size=5)).map(
        lambda t: [t[0], *t[1]]
    ),
    st.lists(frame, max_size=4),
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.one_of(ids, st.integers(), st.none()),
        "device": st.one_of(ids, st.integers(), st.lists(st.integers(), max_size=2)),
        "exp": st.one_of(st.integers(-(2**40), 2**40), st.just(int(time.time()) + 3600), text),
        "nbf": st.integers(0, 2**33),
        "iat": st.one_of(st.integers(0, 2**33), text),
    },
)


def _token(kind: str, value: object) -> str:
    import jwt

    if kind == "minted":
        user, device = value
        return mint_token(SECRET, user, device)
    if kind == "claims":
        return jwt.encode(value, SECRET, algorithm="HS256")
    return value  # random text


tokens = st.one_of(
    st.tuples(ids, ids).map(lambda v: _token("minted", v)),
    claims.map(lambda c: _token("claims", c)),
    text,
    st.binary(max_size=60).map(lambda b: b.hex() + "." + b.decode("latin-1").encode().hex()),
)


@st.composite
def send_requests(draw) -> push_pb2.SendRequest:
    request = push_pb2.SendRequest(
        payload=draw(st.one_of(st.binary(max_size=64), st.integers(65_000, 66_000).map(lambda n: b"p" * n))),
        content_type=draw(st.one_of(st.just("text/plain"), text)),
        priority=draw(enum_value),
        ttl_seconds=draw(int64),
        collapse_key=draw(st.one_of(st.just(""), text)),
        # A small pool, so that keys get reused, for the same and for different requests.
        idempotency_key=draw(st.one_of(st.just(""), st.sampled_from([f"key-{i}" for i in range(8)]), text)),
        delivery=draw(enum_value),
        labels=draw(labels),
    )
    target = draw(st.sampled_from(["user_id", "device_id", "topic", None]))
    if target:
        setattr(request, target, draw(topic if target == "topic" else ids))
    return request


subscribe_requests = st.builds(
    push_pb2.SubscribeRequest,
    device_ids=st.one_of(st.lists(ids, max_size=4), st.integers(995, 1010).map(lambda n: [f"d{i}" for i in range(n)])),
    user_ids=st.lists(ids, max_size=3),
    topics=topic_lists,
)


batches = st.one_of(
    st.lists(send_requests(), max_size=5),
    st.integers(495, 520).map(lambda n: [push_pb2.SendRequest(device_id="nobody", payload=b"x")] * n),
)


# -- the calls -------------------------------------------------------------------------------------


CHANNELS: dict[str, grpc.Channel] = {}


def channel_to(address: str) -> grpc.Channel:
    """One channel per address for all cases: the calls are what is fuzzed, not the dialling
    (grpc re-dials by itself if the server ends a connection)."""
    if address not in CHANNELS:
        CHANNELS[address] = grpc.insecure_channel(address)
    return CHANNELS[address]


def run_stream(address: str, items: list, raw: bool = False) -> None:
    kind = "raw_stream" if raw else "frames"
    connect = channel_to(address).stream_stream(
        "/pushplat.v1.Edge/Connect",
        request_serializer=(lambda b: b) if raw else edge_pb2.ClientFrame.SerializeToString,
        response_deserializer=edge_pb2.ServerFrame.FromString,
    )
    try:
        for _ in connect(iter(items), timeout=CALL_TIMEOUT):
            pass
    except grpc.RpcError as exc:
        record(kind, exc.code(), exc.details() or "")
        return
    record(kind, grpc.StatusCode.OK, "")


def run_unary(address: str, method: str, request: object, metadata=(), raw: bool = False) -> None:
    call = channel_to(address).unary_unary(
        f"/pushplat.v1.Push/{method}",
        request_serializer=(lambda b: b) if raw else (lambda m: m.SerializeToString()),
        response_deserializer=lambda b: b,
    )
    try:
        call(request, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        record("raw_send" if raw else method, exc.code(), exc.details() or "")
        return
    record("raw_send" if raw else method, grpc.StatusCode.OK, "")


FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def test_fuzz_client_frames(devs):
    dev, bystander = devs["open"]

    @settings(FUZZ, max_examples=EXAMPLES["frames"])
    @given(frames)
    def case(items):
        run_stream(dev.edge, items)

    case()
    assert dev.alive()
    bystander.check()


def test_fuzz_hello_tokens(devs):
    dev, bystander = devs["secured"]

    @settings(FUZZ, max_examples=EXAMPLES["tokens"])
    @given(tokens, st.lists(frame, max_size=3))
    def case(token, rest):
        run_stream(dev.edge, [edge_pb2.ClientFrame(hello=edge_pb2.Hello(token=token)), *rest])

    case()
    assert dev.alive()
    bystander.check()


@pytest.mark.parametrize("name", ["open", "secured"])
def test_fuzz_send_requests(devs, name):
    dev, bystander = devs[name]

    @settings(FUZZ, max_examples=EXAMPLES["sends"] // 2)
    @given(st.one_of(send_requests().map(lambda r: ("Send", r)), batches.map(lambda b: ("SendBatch", b))))
    def case(call):
        method, body = call
        request = body if method == "Send" else push_pb2.SendBatchRequest(requests=body)
        run_unary(dev.api, method, request, bystander.api_metadata)

    case()
    assert dev.alive()
    bystander.check()


@pytest.mark.parametrize("name", ["open", "secured"])
def test_fuzz_topic_calls(devs, name):
    dev, bystander = devs[name]

    @settings(FUZZ, max_examples=EXAMPLES["topics"] // 2)
    @given(
        st.one_of(
            subscribe_requests.map(lambda r: ("Subscribe", r)),
            subscribe_requests.map(lambda r: ("Unsubscribe", r)),
            ids.map(lambda d: ("GetSubscriptions", push_pb2.GetSubscriptionsRequest(device_id=d))),
        )
    )
    def case(call):
        method, request = call
        run_unary(dev.api, method, request, bystander.api_metadata)

    case()
    assert dev.alive()
    bystander.check()


def test_fuzz_raw_bytes(devs):
    dev, bystander = devs["open"]

    @settings(FUZZ, max_examples=EXAMPLES["raw_stream"])
    @given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
    def stream_case(chunks):
        run_stream(dev.edge, chunks, raw=True)

    @settings(FUZZ, max_examples=EXAMPLES["raw_send"])
    @given(
        st.sampled_from(
            ["Send", "SendBatch", "GetStatus", "GetPresence", "Subscribe", "Unsubscribe", "GetSubscriptions"]
        ),
        st.binary(max_size=200),
    )
    def unary_case(method, body):
        run_unary(dev.api, method, body, raw=True)

    stream_case()
    unary_case()
    assert dev.alive()
    bystander.check()
    print("fuzz outcomes so far:", dict(sorted(OUTCOMES.items())), flush=True)
