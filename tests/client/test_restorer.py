"""The restore loop with stand-in attempts: it follows its policy and URL source, reports
restores and give-ups, and never restores after a manual stop."""

import asyncio

import pytest

from unbroken.client.attempt import Attempt
from unbroken.client.events import ClientEvent
from unbroken.client.options import RestoreOptions
from unbroken.client.policy import NextTry, RestoreContext
from unbroken.client.restorer import RestoringClient
from unbroken.protocol.faults import Fault
from unbroken.protocol.states import Kind

pytestmark = pytest.mark.timeout(10)


class StandInAttempt(Attempt):
    """Has media at once, unless its URL is down (then it refuses)."""

    def __init__(self, url: str, down: set[str]) -> None:
        super().__init__(url)
        self.down = down
        self.closed = False

    async def open(self) -> None:
        if self.url in self.down:
            raise ConnectionError(f"{self.url} is down")
        self.media_arrived()

    async def close(self) -> None:
        self.closed = True


class StandInClient(RestoringClient):
    role = "publisher"
    kind = Kind.PUBLISH
    live_state = "PUBLISHING"
    stopped_state = "UNPUBLISHED"

    def __init__(self, urls, down=(), **kwargs) -> None:
        self.seen: list[ClientEvent] = []
        super().__init__(urls, "cam", options=RestoreOptions(network_watch=False, jitter=0),
                         on_event=self.seen.append, **kwargs)
        self.down = set(down)
        self.opened: list[str] = []

    def _new_attempt(self, url: str) -> Attempt:
        self.opened.append(url)
        return StandInAttempt(url, self.down)

    async def event(self, kind: str) -> ClientEvent:
        while True:
            event = await self.next_event(5)
            if event.kind == kind:
                return event


class OnlyTo:
    """A policy that sends every try to one URL, `limit` times."""

    def __init__(self, url: str, limit: int) -> None:
        self.url, self.limit = url, limit
        self.asked: list[RestoreContext] = []

    def next_try(self, context: RestoreContext) -> NextTry | None:
        self.asked.append(context)
        return NextTry(0.0, self.url, context.tries + 1) if context.tries < self.limit else None


class Routed:
    """A URL source that routes every try elsewhere (as a manager-aware one would)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.asked: list[tuple[str, Kind, NextTry]] = []

    async def next_url(self, stream: str, kind: Kind, attempt: NextTry) -> str:
        self.asked.append((stream, kind, attempt))
        return self.url


async def test_start_moves_down_the_list_past_a_dead_url():
    client = await StandInClient(["http://a", "http://b"], down={"http://a"}).start()
    try:
        assert client.opened == ["http://a", "http://b"]
        assert client.url == "http://b" and client.attempt.tries == 1
        assert [(e.kind, e.state) for e in client.seen] == [("session", "ESTABLISHED"),
                                                             ("stream", "PUBLISHING")]
    finally:
        await client.stop()


async def test_a_fault_restores_on_the_same_url_and_is_reported():
    client = await StandInClient(["http://a", "http://b"]).start()
    try:
        client.attempt.report_fault(Fault.BITRATE_ZERO)
        restored = await client.event("restored")
        assert restored.report.fault == Fault.BITRATE_ZERO and restored.report.url == "http://a"
        assert restored.report.tries == 1 and restored.report.restore_ms >= 0
        assert client.opened == ["http://a", "http://a"]
    finally:
        await client.stop()


async def test_the_policy_decides_where_restores_go_and_when_to_give_up():
    policy = OnlyTo("http://b", limit=2)
    client = await StandInClient(["http://a", "http://b"], policy=policy).start()
    client.down.add("http://b")
    client.attempt.report_fault(Fault.NODE_DRAINING)
    gave_up = await client.event("gave_up")
    assert gave_up.reason == "node_draining: max tries exhausted"
    assert client.done.is_set() and client.opened == ["http://b", "http://b", "http://b"]
    last = policy.asked[-1]
    assert (last.fault, last.tries, last.last_url) == (Fault.NODE_DRAINING, 2, "http://b")
    assert last.urls == ("http://a", "http://b")


async def test_the_url_source_answers_where_each_try_connects():
    source = Routed("http://routed")
    client = await StandInClient(["http://a"], url_source=source).start()
    try:
        assert client.url == "http://routed"
        stream, kind, plan = source.asked[0]
        assert (stream, kind, plan.url) == ("cam", Kind.PUBLISH, "http://a")
    finally:
        await client.stop()


async def test_manual_stop_never_restores():
    client = await StandInClient(["http://a"]).start()
    attempt = client.attempt
    await client.stop()
    attempt.report_fault(Fault.MEDIA_SILENCE)
    await asyncio.sleep(0.05)
    assert [e.kind for e in client.seen][-2:] == ["stream", "session"]
    assert client.seen[-1].state == "DISCONNECTED" and client.opened == ["http://a"]
    assert attempt.closed


class ProbedClient(StandInClient):
    """Its nodes' TCP ports: those in `refusing` take no connections."""

    def __init__(self, urls, refusing=(), **kwargs) -> None:
        super().__init__(urls, **kwargs)
        self.refusing = set(refusing)
        self.probed: list[str] = []

    async def _accepts_connections(self, url: str) -> bool:
        self.probed.append(url)
        return url not in self.refusing


async def test_a_node_whose_connection_broke_is_checked_before_a_new_session_goes_to_it():
    client = await ProbedClient(["http://a", "http://b"]).start()
    try:
        client.refusing.add("http://a")  # SIGKILLed: its port refuses connections
        client.down.add("http://a")
        client.attempt.report_fault(Fault.SESSION_CLOSED)
        restored = await client.event("restored")
        assert restored.report.url == "http://b" and restored.report.tries == 1
        assert client.probed == ["http://a"]
        assert client.opened == ["http://a", "http://b"]  # no session set up for dead a
    finally:
        await client.stop()


async def test_a_node_that_still_takes_connections_gets_the_new_session():
    client = await ProbedClient(["http://a", "http://b"]).start()
    try:
        client.attempt.report_fault(Fault.CONNECTION_FAILED)
        restored = await client.event("restored")
        assert restored.report.url == "http://a" and client.probed == ["http://a"]
        client.attempt.report_fault(Fault.BITRATE_ZERO)  # nothing broke on the node's side
        await client.event("restored")
        assert client.probed == ["http://a"] and client.opened == ["http://a"] * 3
    finally:
        await client.stop()


async def test_accepts_connections_tells_a_listening_port_from_a_closed_one():
    from unbroken.client.restorer import accepts_connections

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await accepts_connections(f"http://127.0.0.1:{port}/whep")
    finally:
        server.close()
        await server.wait_closed()
    assert not await accepts_connections(f"http://127.0.0.1:{port}")
    assert not await accepts_connections("http://no-such-host.invalid:80", timeout=2)
