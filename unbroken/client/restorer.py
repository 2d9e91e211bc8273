"""The restore loop shared by Publisher and Subscriber.

A client runs one *attempt* at a time (a session on one node). The attempt's
watchdogs report the first fault; the client then asks its restore policy for the
next try (when, and which URL), its URL source for the URL to connect to, and starts
new attempts until one delivers media again, and reports the restore (fault,
detect_ms, restore_ms, gap_ms). A try that goes back to a node whose connection just
broke first checks with one TCP handshake that the node still takes connections (a
SIGKILLed node refuses at once, and costs no WebRTC set-up that could only fail). A manual stop never restores; running out of tries
is reported as a `gave_up` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from unbroken.protocol.faults import NODE_UNRESPONSIVE, Fault
from unbroken.protocol.states import Kind

from .attempt import Attempt, FaultRecord
from .events import DISCONNECTED, ESTABLISHED, FAILED, ClientEvent, RestoreReport
from .network import NetworkWatcher
from .options import RestoreOptions
from .manager_routes import ManagerRoutes, split_managers
from .policy import DefaultRestorePolicy, RestoreContext, RestorePolicy
from .urls import ListedUrls, UrlSource

__all__ = ["RestoringClient"]

log = logging.getLogger("unbroken.client")

# the old session's media counts as continuous when it arrived this close to the new
# session's first frame (the attempts notice media by polling every 50 ms)
MEDIA_POLL_GAP_S = 0.1
# faults that say the connection to the node broke: the node may be gone (SIGKILL). Before
# a try goes back to that node's URL, one TCP handshake checks it still accepts
# connections: a dead node refuses at once, and then costs no WebRTC session set-up (a
# peer connection, ICE gathering, an offer) that could only fail at its POST
NODE_MAY_BE_GONE = frozenset({Fault.SESSION_CLOSED, Fault.CONNECTION_CLOSED,
                              Fault.CONNECTION_FAILED, Fault.SESSION_FAILED,
                              "connection_lost"})
PROBE_TIMEOUT_S = 0.5  # as a POST's own TCP connect (whip.CONNECT_TIMEOUT)


async def accepts_connections(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if `url`'s host accepts a TCP connection on its port within `timeout`."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port),
                                           timeout)
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


class RestoringClient:
    """Base of Publisher and Subscriber: owns the current attempt, the restore loop (its
    policy and URL source), the events it reports, and the manual stop.

    ``manager`` (a URL, a comma-separated list or a list of stream managers) asks the
    managers for a route on every try (``ManagerRoutes``, trusting a self-signed manager
    by ``manager_fingerprint`` or ``manager_ca``); ``urls`` may then be None (the
    policy's passes go over the manager list)."""

    role = ""  # "publisher" | "subscriber"
    kind = Kind.PUBLISH  # what its sessions do with the stream
    live_state = ""  # PUBLISHING | PLAYING
    # on a drain notice, how long the old session may stay after the new one's first
    # frame, until the node ends it (a publisher: the draining node keeps it while
    # anyone there still plays the stream); 0 = closed at the new one's first frame
    drain_hold_s = 0.0
    stopped_state = ""  # UNPUBLISHED | STOPPED

    def __init__(self, urls: str | list[str] | None, stream: str, token: str | None = None,
                 options: RestoreOptions | None = None,
                 on_event: Callable[[ClientEvent], None] | None = None,
                 policy: RestorePolicy | None = None,
                 url_source: UrlSource | None = None,
                 manager: str | list[str] | None = None,
                 manager_fingerprint: str | None = None,
                 manager_ca: str | None = None) -> None:
        self._own_source: ManagerRoutes | None = None
        if manager is not None:
            if url_source is not None:
                raise ValueError("give manager= or url_source=, not both")
            url_source = self._own_source = ManagerRoutes(
                manager, token=token, fingerprint=manager_fingerprint, ca_file=manager_ca)
            urls = urls or split_managers(manager)
        self.urls = [u.strip().rstrip("/") for u in
                     (urls.split(",") if isinstance(urls, str) else urls or []) if u.strip()]
        if not self.urls:
            raise ValueError("at least one URL is needed")
        self.stream = stream
        self.token = token
        self.options = options or RestoreOptions()
        self.options.validate()
        self.policy: RestorePolicy = policy or DefaultRestorePolicy(self.options)
        self.url_source: UrlSource = url_source or ListedUrls()
        self.on_event = on_event
        self.events: asyncio.Queue[ClientEvent] = asyncio.Queue(maxsize=1000)
        self.attempt: Attempt | None = None
        self.restores: list[RestoreReport] = []
        self.state = "NEW"
        self.stopping = False
        self._supervisor: asyncio.Task | None = None
        self._network: NetworkWatcher | None = None
        self._closing: set[asyncio.Task] = set()
        self._holding: set[asyncio.Task] = set()  # drained sessions their node still uses
        self.done = asyncio.Event()  # set when stopped or given up

    # public -------------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        return self.attempt.url if self.attempt else None

    @property
    def node(self) -> str | None:
        """The node id of the current session, when the URL source knows it."""
        return self.attempt.node if self.attempt else None

    async def start(self) -> "RestoringClient":
        """Connect (trying the URL list as the policy says); raises if all tries fail."""
        attempt = await self._connect(fault=None, last_url=None)
        if attempt is None:
            self.emit(ClientEvent("gave_up", FAILED, reason="could not connect",
                                  url=self.urls[0]))
            if self._own_source is not None:
                await self._own_source.close()
            self.done.set()
            raise ConnectionError(f"{self.role}: could not connect to {self.urls}")
        self._established(attempt)
        if self.options.network_watch:
            self._network = NetworkWatcher(self._network_changed)
            await self._network.start()
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def stop(self) -> None:
        """Manual stop: ends the session and never restores."""
        if self.stopping:
            return
        self.stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._network:
            await self._network.stop()
        if self.attempt:
            await self.attempt.close()
        for task in self._holding:
            task.cancel()
        await asyncio.gather(*self._closing, *self._holding, return_exceptions=True)
        if self._own_source is not None:
            await self._own_source.close()
        self.emit(ClientEvent("stream", self.stopped_state, reason="stopped by user",
                              url=self.url))
        self.emit(ClientEvent("session", DISCONNECTED, reason="stopped by user", url=self.url))
        self.state = DISCONNECTED
        self.done.set()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def next_event(self, timeout: float) -> ClientEvent:
        async with asyncio.timeout(timeout):
            return await self.events.get()

    def emit(self, event: ClientEvent) -> None:
        """Report `event`: the events queue (oldest dropped when full) and `on_event`."""
        log.info(f"{self.role} {event.kind}", extra={"stream": self.stream, **event.as_dict()})
        if self.events.full():
            self.events.get_nowait()
        self.events.put_nowait(event)
        if self.on_event:
            try:
                self.on_event(event)
            except Exception:
                log.exception("on_event callback failed")

    def _retire_drained(self, attempt: Attempt) -> None:
        """Close the session a drain notice replaced: at once, or once its node ends it
        (at most `drain_hold_s` from now)."""
        if self.drain_hold_s <= 0 or self.stopping:
            self.close_in_background(attempt)
            return

        async def hold() -> None:
            try:
                async with asyncio.timeout(self.drain_hold_s):
                    await attempt.ended.wait()
            except TimeoutError:
                pass
            finally:  # a manual stop cancels the hold: close now
                await attempt.close()

        task = asyncio.create_task(hold())
        self._holding.add(task)
        task.add_done_callback(self._holding.discard)

    def close_in_background(self, attempt: Attempt) -> None:
        """Close `attempt` without waiting: a dead node can make a goodbye slow, and that
        must never delay a restore (stop() waits for these)."""
        task = asyncio.create_task(attempt.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # to implement -------------------------------------------------------------------
    def _new_attempt(self, url: str) -> Attempt:
        raise NotImplementedError

    def _after_fault(self, fault: FaultRecord) -> bool:
        """Adjust for the next attempt (e.g. change codec); False = give up."""
        return True

    def _report_extra(self) -> dict:
        return {}

    # internals ----------------------------------------------------------------------
    def _established(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.state = self.live_state
        self.emit(ClientEvent("session", ESTABLISHED, url=attempt.url))
        self.emit(ClientEvent("stream", self.live_state, url=attempt.url))

    def _network_changed(self, unchanged_at: float) -> None:
        if self.attempt is not None:
            self.attempt.report_fault(Fault.NETWORK_CHANGE, unchanged_at)

    async def _supervise(self) -> None:
        while not self.stopping:
            attempt = self.attempt
            fault = await attempt.wait_fault()
            if self.stopping:
                return
            self.state = FAILED
            self.emit(ClientEvent("stream", FAILED, reason=fault.name, url=attempt.url))
            # make-before-break on a drain notice: the old session keeps playing (or
            # feeding) until the new one delivers its first frame, then it is closed
            keep_old = fault.name == Fault.NODE_DRAINING
            if not keep_old:
                self.close_in_background(attempt)
            if not (self.options.restore and self._after_fault(fault)):
                if keep_old:
                    self.close_in_background(attempt)
                self.emit(ClientEvent("session", FAILED, reason=fault.name, url=attempt.url))
                self.emit(ClientEvent("gave_up", FAILED, reason=fault.name, url=attempt.url))
                self.done.set()
                return
            self.emit(ClientEvent("restoring", reason=fault.name, url=attempt.url))
            if fault.name in NODE_UNRESPONSIVE:
                self._node_unresponsive(attempt.url)
            try:
                new = await self._connect(fault, attempt.url)
            finally:
                if keep_old:
                    self._retire_drained(attempt)
            if new is None:
                self.emit(ClientEvent("session", FAILED, reason=fault.name, url=attempt.url))
                self.emit(ClientEvent("gave_up", FAILED,
                                      reason=f"{fault.name}: max tries exhausted",
                                      url=attempt.url))
                self.done.set()
                return
            self.attempt = new
            report = RestoreReport(
                fault=fault.name,
                detect_ms=round((fault.detected_at - fault.last_good_at) * 1000, 1),
                restore_ms=round((new.first_media_at - fault.detected_at) * 1000, 1),
                gap_ms=0.0 if keep_old and attempt.last_media_at and attempt.last_media_at >= (
                    new.first_media_at - MEDIA_POLL_GAP_S) else round(
                    (new.first_media_at - (fault.last_media_at or fault.last_good_at)) * 1000, 1),
                tries=new.tries, url=new.url, node=new.node, **self._report_extra())
            self.restores.append(report)
            self.state = self.live_state
            self.emit(ClientEvent("restored", self.live_state, reason=fault.name,
                                  url=new.url, report=report))

    async def _accepts_connections(self, url: str) -> bool:
        """Whether the node at `url` (whose connection just broke) still takes connections."""
        return await accepts_connections(url)

    def _node_unresponsive(self, url: str) -> None:
        report = getattr(self.url_source, "node_unresponsive", None)  # optional too
        if callable(report):
            report(url)

    def _node_of(self, url: str) -> str | None:
        node_of = getattr(self.url_source, "node_of", None)  # optional in a UrlSource
        return node_of(url) if callable(node_of) else None

    async def _connect(self, fault: FaultRecord | None, last_url: str | None
                       ) -> Attempt | None:
        """Try as the policy plans until an attempt delivers media; None = gave up."""
        failed = 0
        while not self.stopping:
            plan = self.policy.next_try(RestoreContext(
                fault.name if fault else None, failed, tuple(self.urls), last_url,
                fault.prefer_url if fault else None))
            if plan is None:
                return None
            if plan.delay:
                await asyncio.sleep(plan.delay)
            attempt: Attempt | None = None
            url = plan.url
            try:
                url = await self.url_source.next_url(self.stream, self.kind, plan)
                if (fault is not None and fault.name in NODE_MAY_BE_GONE and url == last_url
                        and not await self._accepts_connections(url)):
                    raise ConnectionRefusedError(f"{url} accepts no connections")
                attempt = self._new_attempt(url)
                attempt.node = self._node_of(url)
                async with asyncio.timeout(self.options.connect_timeout_s):
                    await attempt.open()
                await attempt.wait_media(self.options.connect_timeout_s)
            except asyncio.CancelledError:
                if attempt is not None:
                    self.close_in_background(attempt)
                raise
            except Exception as exc:  # no route, refused, unreachable, timed out: next try
                log.info(f"{self.role} attempt failed",
                         extra={"url": url, "error": repr(exc)[:200], "try": plan.round})
                if attempt is not None:
                    self.close_in_background(attempt)
                failed += 1
                continue
            attempt.tries = plan.round
            return attempt
        return None
