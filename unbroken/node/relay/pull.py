"""One stream's pull from upstream: attempts on a bounded schedule, the upstream session's
liveness, and the state the API shows."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from unbroken.media.peer import NegotiationError
from unbroken.media.pull import PullPeer
from unbroken.media.stream import KINDS, Source, Stream
from unbroken.protocol.whip_whep import SseEvent

from .locator import Upstream, UpstreamLocator
from .upstream_client import (UpstreamClient, UpstreamGone, UpstreamRefused, UpstreamSession,
                              UpstreamSilent)

__all__ = ["PullHost", "Pull", "PullState", "retry_delay"]

log = logging.getLogger("unbroken.node.relay")

# seconds before the next attempt after 1, 2, 3... failed ones in a row; then the last
RETRY_SCHEDULE = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0)
# how long an upstream may hold our offer while the stream is not live there
UPSTREAM_WAIT_LIVE_MS = 1000
# keep-alive interval asked of the upstream's event stream, and the silence that means
# the upstream (or the path to it) is gone
KEEPALIVE_MS = 150
SILENCE = 0.5
LOCATE_TIMEOUT = 2.0  # s a locator may take to answer
# a draining upstream: how long the edge looks for the stream elsewhere while the old
# session still feeds it, how often, and how long the new source may take to send the
# keyframe it switches at
HANDOVER_TIMEOUT = 5.0
HANDOVER_RETRY = 0.1
SWITCH_TIMEOUT = 1.0
# how soon after `reconnect` the `node_draining` event that makes it a drain must come
DRAIN_NOTICE_WAIT = 0.2
UPSTREAM_DRAINING = "the upstream drains"
VIEWER_CHECK_INTERVAL = 0.1  # s between two looks at a pulled stream's viewers
# s without a media packet from an upstream that says the stream is live (its events and
# keep-alives still come) after which the path's media is taken as lost: longer than an
# origin takes to tell `inactive` when its publisher goes (its media timeout, 0.8 s)
MEDIA_SILENCE = 2.0
MEDIA_CHECK_INTERVAL = 0.1


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` (≥ 1) failed attempts in a row."""
    return RETRY_SCHEDULE[min(failures, len(RETRY_SCHEDULE)) - 1]


class PullState(StrEnum):
    CONNECTING = "connecting"  # an attempt is under way
    LIVE = "live"  # the upstream's stream feeds ours
    INACTIVE = "inactive"  # the upstream session is up; its stream has no publisher now
    RETRYING = "retrying"  # every upstream refused or failed: waiting for the next attempt
    ENDED = "ended"  # no viewers for the linger time (or the node stops)


class PullHost(Protocol):
    """What a pull needs of its node."""

    streams: dict[str, Stream]

    def stream(self, name: str) -> Stream: ...

    def attach_source(self, stream: Stream, source: Source) -> None: ...

    def forget_idle(self, stream: Stream) -> None: ...


class Pull:
    """Owns one stream's pull: one upstream WHEP session at a time (its PullPeer feeding
    the edge's stream), the attempts that find one (every upstream the locator names, at
    once; the first to answer wins), the retry schedule, the linger after the last viewer,
    and its figures (state, upstream, since, packets, losses, refusals)."""

    def __init__(self, name: str, host: PullHost, locator: UpstreamLocator,
                 client: UpstreamClient, linger: float,
                 on_outcome: Callable[[str, int | None], None] | None = None,
                 on_ended: Callable[["Pull"], None] | None = None) -> None:
        self.name = name
        self.host = host
        self.locator = locator
        self.client = client
        self.linger = linger
        # told ("live" | "refused" | "failed" | "lost", HTTP status or None) of each outcome
        self.on_outcome = on_outcome or (lambda outcome, status: None)
        # told when the pull has ended (a viewer may have come meanwhile)
        self.on_ended = on_ended or (lambda pull: None)
        self.state = PullState.CONNECTING
        self.since = time.monotonic()
        self.upstream: Upstream | None = None
        self.peer: PullPeer | None = None
        self.attempts = 0
        self.failures = 0  # failed attempts in a row
        self._unresponsive: str | None = None  # an upstream that fell silent, for the locator
        self.upstream_losses = 0  # live upstream sessions lost
        self.refusals: dict[str, dict] = {}  # upstream URL -> its last refusal
        self.last_error = ""
        self._packets_before = 0  # packets/losses of the previous upstream sessions
        self._lost_before = 0
        self._idle_since: float | None = None
        self.waiting = 0  # viewers waiting for this pull to go live
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._session: UpstreamSession | None = None  # the upstream session feeding us

    # lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pull {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    @property
    def ended(self) -> bool:
        return self.state is PullState.ENDED

    async def wait_settled(self, timeout: float, through_failures: bool) -> None:
        """Wait until the stream is live here, the pull ended, or (unless
        `through_failures`) an attempt failed; at most `timeout` seconds."""
        failures = self.failures
        deadline = time.monotonic() + timeout
        while not (self._live() or self.ended
                   or (not through_failures and self.failures > failures
                       and self.state is PullState.RETRYING)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return

    def _live(self) -> bool:
        peer = self.peer
        return (self.state is PullState.LIVE and peer is not None
                and peer.source is not None and peer.stream.source is peer.source)

    def _set(self, state: PullState) -> None:
        if state is not self.state:
            self.state = state
            self.since = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    # the loop ---------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while not self._lingered():
                attached = await self._attempt()
                if attached is None:
                    self.failures += 1
                    self._set(PullState.RETRYING)
                    await self._sleep_unless_lingered(retry_delay(self.failures))
                    continue
                self.failures = 0
                while attached is not None:  # a drained upstream hands over to the next
                    attached = await self._follow(*attached)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("pull failed", extra={"stream": self.name})
        finally:
            if self.peer is not None:
                await self.peer.close("relay stopped")
            if self._session is not None:  # stopped (a drain): end it upstream now, not
                session, self._session = self._session, None  # at its consent's expiry
                await self.client.end(session)
            self._set(PullState.ENDED)
            stream = self.host.streams.get(self.name)
            if stream is not None:
                self.host.forget_idle(stream)
            log.info("pull ended", extra={"stream": self.name})
            self.on_ended(self)

    def has_viewers(self) -> bool:
        return self._viewers()

    def _viewers(self) -> bool:
        stream = self.host.streams.get(self.name)
        if stream is None:
            return self.waiting > 0
        return (self.waiting > 0 or bool(stream.subscriber_ids)
                or any(stream.sinks(kind) for kind in KINDS))

    def _lingered(self) -> bool:
        """True once the stream has had no viewer (WHEP, channel, HLS) for the linger."""
        now = time.monotonic()
        if self._viewers():
            self._idle_since = None
            return False
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= self.linger

    def hold(self) -> None:
        """A viewer is on its way (waiting for the pull): restart the linger."""
        self._idle_since = None

    async def _sleep_unless_lingered(self, delay: float) -> None:
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._lingered():
            await asyncio.sleep(min(VIEWER_CHECK_INTERVAL, max(0.0, deadline - time.monotonic())))

    async def _until_lingered(self) -> None:
        while not self._lingered():
            await asyncio.sleep(VIEWER_CHECK_INTERVAL)

    # one attempt ------------------------------------------------------------
    async def _attempt(self, avoid: str | None = None
                       ) -> tuple[PullPeer, UpstreamSession] | None:
        """One attempt on every upstream the locator names (but `avoid`, a draining
        one). With `avoid` the stream is fed meanwhile: the new source takes over at its
        first keyframe, and the state stays as it is."""
        if avoid is None:
            self._set(PullState.CONNECTING)
        self.attempts += 1
        try:
            unresponsive, self._unresponsive = self._unresponsive, None
            async with asyncio.timeout(LOCATE_TIMEOUT):
                located = await self.locator.locate(self.name, unresponsive)
            upstreams = tuple(u for u in located if u.url != avoid)
        except TimeoutError:
            upstreams = ()
        if not upstreams:
            self.last_error = "no upstream known for this stream"
            self.on_outcome("failed", None)
            return None
        stream = self.host.stream(self.name)
        peer = PullPeer(secrets.token_urlsafe(12), stream)
        session: UpstreamSession | None = None
        try:
            offer = await peer.offer()
            session = await self._race(upstreams, offer)
            if session is None:
                await peer.close("no upstream answered")
                return None
            source = await peer.accept(session.answer)
        except NegotiationError as exc:
            self.last_error = exc.reason
            self.on_outcome("failed", None)
            await peer.close("negotiation failed")
            if session is not None:
                self._in_background(self.client.end(session))
            return None
        self.peer = peer
        self.upstream = session.upstream
        self._session = session
        if avoid is None:
            self.host.attach_source(stream, source)
        else:
            await self._switch(stream, source)
        self.on_outcome("live", 201)
        self._set(PullState.LIVE)
        log.info("pulling", extra={"stream": self.name, "upstream": session.upstream.url})
        return peer, session

    async def _race(self, upstreams: tuple[Upstream, ...], offer: str) -> UpstreamSession | None:
        """POST the offer to every upstream at once: the first 201 wins; sessions granted
        later are deleted; each refusal is recorded."""
        tasks = {asyncio.create_task(self.client.offer(u, self.name, offer,
                                                       UPSTREAM_WAIT_LIVE_MS))
                 for u in upstreams}
        winner: UpstreamSession | None = None
        pending = tasks
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                result = self._outcome(task)
                if result is not None and winner is None:
                    winner = result
                elif result is not None:
                    self._in_background(self.client.end(result))
        for task in pending:  # upstreams still holding the offer: end what they grant
            self._in_background(self._end_late(task))
        return winner

    async def _switch(self, stream: Stream, source: Source) -> None:
        """Feed `stream` from `source` from its first keyframe on (at the latest
        SWITCH_TIMEOUT from now)."""
        stream.attach_at_keyframe(source)
        deadline = time.monotonic() + SWITCH_TIMEOUT
        while stream.source is not source and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if stream.source is not source:
            self.host.attach_source(stream, source)

    async def _handover(self, peer: PullPeer, session: UpstreamSession
                        ) -> tuple[PullPeer, UpstreamSession] | None:
        """The upstream drains: look for the stream on the others while it still feeds
        ours (make-before-break); the first that has it takes over at a keyframe."""
        deadline = time.monotonic() + HANDOVER_TIMEOUT
        while (time.monotonic() < deadline and not peer.closed.is_set()
               and not self._lingered()):
            attached = await self._attempt(avoid=session.upstream.url)
            if attached is not None:
                return attached
            await asyncio.sleep(HANDOVER_RETRY)
        return None

    def _outcome(self, task: asyncio.Task) -> UpstreamSession | None:
        exc = task.exception()
        if exc is None:
            return task.result()
        if isinstance(exc, UpstreamRefused):
            self.refusals[exc.upstream.url] = {"status": exc.status, "reason": exc.reason,
                                               "at": round(time.time(), 3)}
            self.last_error = str(exc)
            self.on_outcome("refused", exc.status)
            return None
        raise exc

    async def _end_late(self, task: asyncio.Task) -> None:
        try:
            session = await task
        except UpstreamRefused:
            return
        await self.client.end(session)

    def _in_background(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # a live upstream session ------------------------------------------------
    async def _follow(self, peer: PullPeer, session: UpstreamSession
                      ) -> tuple[PullPeer, UpstreamSession] | None:
        """Until the upstream session ends, its path dies, or the linger expires; a
        draining upstream hands over to the next one: its session is returned."""
        events = asyncio.create_task(self._read_events(peer, session))
        closed = asyncio.create_task(peer.closed.wait())
        lingered = asyncio.create_task(self._until_lingered())
        silent = asyncio.create_task(self._until_media_silent(peer))
        watched = (events, closed, lingered, silent)
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished = {t for t in watched if t.done()}
            for task in watched:
                task.cancel()
            await asyncio.gather(*watched, return_exceptions=True)
        no_viewers = lingered in finished
        if events in finished and not events.cancelled() and events.exception() is None:
            reason = events.result()
        elif closed in finished:
            reason = f"upstream connection {peer.connection_state}"
        elif silent in finished:
            reason = f"no media from the upstream for {MEDIA_SILENCE:g} s while it is live"
        else:
            reason = "no viewers"
        if reason == UPSTREAM_DRAINING:
            successor = await self._handover(peer, session)
            if successor is not None:
                log.info("upstream switched", extra={"stream": self.name, "from": session.upstream.url,
                                                     "to": successor[1].upstream.url})
                self._count_session(peer)
                await peer.close("upstream drained")  # no longer the source: nobody hears it
                self._in_background(self.client.end(session))  # (_session: the successor's)
                return successor
            reason = "the upstream drains and no other has the stream"
        if not no_viewers:
            self.upstream_losses += 1
            self.last_error = reason
            self.on_outcome("lost", None)
            log.info("upstream lost", extra={"stream": self.name, "reason": reason,
                                             "upstream": session.upstream.url})
        self._count_session(peer)
        self.peer = None
        if not no_viewers:
            self._set(PullState.CONNECTING)
        await peer.close(reason)  # detaches the source: viewers hear `inactive`
        self._session = None
        self._in_background(self.client.end(session))
        return None

    async def _until_media_silent(self, peer: PullPeer) -> None:
        """Return once no media packet came for MEDIA_SILENCE while the pull is live (the
        upstream's events say the stream is: a path that carries signaling but no media,
        or an upstream that stopped sending to us)."""
        last_count, last_at = -1, time.monotonic()
        while True:
            await asyncio.sleep(MEDIA_CHECK_INTERVAL)
            count = _source_counts(peer.source)[0]
            now = time.monotonic()
            if count != last_count or self.state is not PullState.LIVE:
                last_count, last_at = count, now
            elif now - last_at >= MEDIA_SILENCE:
                return

    async def _read_events(self, peer: PullPeer, session: UpstreamSession) -> str:
        """Mirror the upstream stream's `active`/`inactive` on ours; returns why the
        session is over."""
        events = self.client.events(session, KEEPALIVE_MS, SILENCE)
        try:
            async for event in events:
                source = peer.source
                if source is None:
                    continue
                stream = peer.stream
                if event == SseEvent.INACTIVE and stream.source is source:
                    stream.detach(source)
                    self._set(PullState.INACTIVE)
                elif event == SseEvent.ACTIVE and stream.source is not source:
                    self.host.attach_source(stream, source)
                    self._set(PullState.LIVE)
                elif event == SseEvent.NODE_DRAINING:
                    return UPSTREAM_DRAINING
                elif event == SseEvent.RECONNECT:
                    # a drain's `reconnect` comes with `node_draining` right behind it
                    try:  # asyncio.timeout, not wait_for: see UpstreamClient.events
                        async with asyncio.timeout(DRAIN_NOTICE_WAIT):
                            following = await anext(events)
                    except (asyncio.TimeoutError, StopAsyncIteration, UpstreamGone):
                        following = None
                    if following == SseEvent.NODE_DRAINING:
                        return UPSTREAM_DRAINING
                    return "the upstream asked to reconnect"
        except UpstreamSilent as exc:
            self._unresponsive = session.upstream.url  # named to the locator next time
            return str(exc)
        except UpstreamGone as exc:
            return str(exc)
        return "the upstream's events ended"

    # figures ----------------------------------------------------------------
    def _count_session(self, peer: PullPeer) -> None:
        packets, lost = _source_counts(peer.source)
        self._packets_before += packets
        self._lost_before += lost

    def snapshot(self) -> dict:
        packets, lost = _source_counts(self.peer.source if self.peer else None)
        return {
            "url": self.upstream.url if self.upstream else None,
            "state": self.state.value,
            "since": round(time.monotonic() - self.since, 3),
            "packets": self._packets_before + packets,
            "packets_lost": self._lost_before + lost,
            "attempts": self.attempts,
            "upstream_losses": self.upstream_losses,
            "refusals": dict(self.refusals),
            "last_error": self.last_error or None,
        }


def _source_counts(source: Source | None) -> tuple[int, int]:
    if source is None:
        return 0, 0
    return (sum(r.stats.packets for r in source.receivers.values()),
            sum(r.stats.lost for r in source.receivers.values()))
