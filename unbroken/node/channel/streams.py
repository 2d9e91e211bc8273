"""A session socket's publishes and plays, by the client's ids."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from unbroken.protocol import session as proto
from unbroken.protocol.endings import Ending
from unbroken.protocol.refusals import Refusal, Refused
from unbroken.protocol.states import Kind, StreamEvent
from unbroken.protocol.whip_whep import SseEvent

from ..admission import Admission, OfferRequest
from ..media_session import MediaSession

log = logging.getLogger("unbroken.node.ws")


@dataclass
class Handle:
    """One publish or play of a socket session, by the client's id."""

    id: str
    kind: Kind
    stream: str
    media: MediaSession | None = None  # once negotiated
    stop_requested: bool = False
    listener: Callable[[str, dict], None] | None = None


class StreamHandles:
    """Owns a socket's publishes and plays: starts them through the node's admission,
    translates their media sessions' events into session-channel messages, stops them,
    and ends them all when the socket goes."""

    def __init__(self, admission: Admission, max_streams: int, send: Callable[[dict], None],
                 spawn: Callable[[Coroutine], asyncio.Task], channel: str) -> None:
        self.admission = admission
        self.state = admission.state
        self.max_streams = max_streams
        self.handles: dict[str, Handle] = {}
        self.ended = False
        self._send, self._spawn, self._channel = send, spawn, channel

    def rebind(self, send: Callable[[dict], None],
               spawn: Callable[[Coroutine], asyncio.Task]) -> None:
        """Another socket resumed the session: what we say goes there now."""
        self._send, self._spawn = send, spawn

    def start(self, message: dict) -> None:
        id_, kind, name = message["id"], Kind(message["type"]), message["stream"]
        if id_ in self.handles:
            self._send(proto.error(proto.DUPLICATE_ID,
                                   f"id {id_!r} is already in use on this session", id_, "id"))
            return
        if len(self.handles) >= self.max_streams:
            self._send(proto.stream_state(
                id_, name, proto.FAILED, proto.TOO_MANY_STREAMS,
                f"a session may hold {self.max_streams} streams at a time"))
            return
        handle = Handle(id_, kind, name)
        self.handles[id_] = handle
        request = OfferRequest(kind, name, message["sdp"], replaces=message.get(proto.REPLACES),
                               wait_live=message.get(proto.WAIT_LIVE_MS, 0) / 1000)
        self._spawn(self._negotiate(handle, request))

    def _refuse(self, handle: Handle, code: str, reason: str) -> None:
        if self.handles.get(handle.id) is handle:
            del self.handles[handle.id]
        self._send(proto.stream_state(handle.id, handle.stream, proto.FAILED, code, reason))

    async def _negotiate(self, handle: Handle, request: OfferRequest) -> None:
        try:
            media = await self.admission.admit(request)
        except Refused as exc:
            return self._refuse(handle, exc.code, exc.reason)
        except Exception:
            log.exception("negotiation failed", extra={"channel": self._channel,
                                                       "stream": handle.stream})
            return self._refuse(handle, Refusal.INTERNAL_ERROR, "negotiation failed")
        if self.ended:  # the socket went away meanwhile
            await self.state.end(media, Ending.SESSION_CLOSED, "session closed")
            return
        handle.media = media
        # no await from here to the listener: no event of the media session is missed
        self._send(proto.answer(handle.id, handle.stream, media.answer, media.id,
                                media.resource.location))
        handle.listener = self._listener(handle)
        media.events.listeners.append(handle.listener)
        if handle.kind == Kind.PLAY:
            stream = media.stream
            self._send(proto.stream_event(
                handle.id, handle.stream,
                StreamEvent.ACTIVE if stream.live else StreamEvent.INACTIVE))
            self._send(proto.stream_event(handle.id, handle.stream, StreamEvent.VIEWERCOUNT,
                                          viewercount=len(stream.subscriber_ids)))
        if handle.stop_requested:
            await self.state.end(media, Ending.STOPPED, "stopped by client")

    def _listener(self, handle: Handle) -> Callable[[str, dict], None]:
        def on_event(event: str, data: dict) -> None:
            if event == SseEvent.STREAM_STATE:
                self._send(proto.stream_state(handle.id, handle.stream, data["state"],
                                              data.get("code"), data.get("reason")))
                if data["state"] in proto.TERMINAL_STATES:
                    if self.handles.get(handle.id) is handle:
                        del self.handles[handle.id]
                    if handle.media is not None and handle.listener in \
                            handle.media.events.listeners:
                        handle.media.events.listeners.remove(handle.listener)
            elif event in (StreamEvent.ACTIVE, StreamEvent.INACTIVE):
                self._send(proto.stream_event(handle.id, handle.stream, event))
            elif event == StreamEvent.VIEWERCOUNT:
                self._send(proto.stream_event(handle.id, handle.stream, event,
                                              viewercount=data.get("viewercount")))
            # "reconnect" and "node_draining" reach the socket once, as node_draining
            # (ChannelRegistry), and as FAILED codec_changed

        return on_event

    def stop(self, id_: str) -> None:
        handle = self.handles.get(id_)
        if handle is None:
            self._send(proto.error(proto.UNKNOWN_ID,
                                   f"no stream with id {id_!r} on this session", id_, "id"))
            return
        if handle.media is None:
            handle.stop_requested = True  # stopped as soon as its negotiation completes
            return
        if not handle.stop_requested:
            handle.stop_requested = True
            self._spawn(self.state.end(handle.media, Ending.STOPPED, "stopped by client"))

    async def release(self, ending: Ending, reason: str) -> None:
        """The socket is gone: end every stream it holds."""
        self.ended = True
        sessions = []
        for handle in list(self.handles.values()):
            if handle.media is not None:
                sessions.append(handle.media)
            else:
                handle.stop_requested = True  # ended once its negotiation completes
        self.handles.clear()
        await asyncio.gather(*(self.state.end(s, ending, reason) for s in sessions),
                             return_exceptions=True)

    def snapshot(self) -> dict:
        return {h.id: {"kind": h.kind, "stream": h.stream,
                       "session": h.media.id if h.media else None}
                for h in self.handles.values()}
