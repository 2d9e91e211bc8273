"""The session channel protocol (``GET /ws``): JSON text messages over one WebSocket.

Shared by the node (server side) and the clients; no HTTP library here. The full
reference with examples is ``docs/session-channel.md``. In short:

* The client opens the socket and sends ``hello``; the node answers ``welcome`` with the
  session id and the ping interval it will use. The session is then ESTABLISHED.
* The node sends ``ping`` every ``ping_interval`` ms; the client answers each with
  ``pong`` (same ``seq``). The node closes a session after ``missing_pings`` unanswered
  pings; the client declares the session FAILED when ``missing_pings`` pings in a row
  did not arrive (no ping for one "pings check period").
* ``publish`` / ``play`` carry an SDP offer and a client-chosen ``id``; the node answers
  ``answer`` and then reports ``stream_state`` changes (PUBLISHING/UNPUBLISHED,
  PLAYING/STOPPED, FAILED with a ``code``). ``stop`` ends one.
* ``stream_event`` (the played stream became ``active``/``inactive``, ``viewercount``),
  ``node_draining`` and ``session_closing`` tell a client what it needs to restore well.
* Bad input gets an ``error`` (``code``, ``reason``, ``ref``) or, when the session
  cannot go on, ``session_closing`` and a close frame with a code and reason.

Message builders return plain dicts (``encode`` makes the text); ``parse_client_message``
and ``parse_server_message`` check what arrives and raise ``ProtocolError`` with the
``error`` code and reason to send back.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .channel_codes import CLOSE_CODES, ChannelClose, ErrorCode, close_code
from .endings import Ending
from .names import valid_stream_name
from .refusals import Refusal
from .states import ACTIVE_STATE, ENDED_STATE, TERMINAL_STATES, SessionState, StreamEvent, StreamState
from .whip_whep import MAX_WAIT_LIVE_MS, REPLACES, WAIT_LIVE_MS

# the message builders and parsers, the limits, and the vocabulary under the short names
# the session-channel code uses (re-exported from the modules that define it)
__all__ = [
    "ACTIVE_STATE", "ALREADY_WELCOMED", "BAD_CODEC", "BAD_FIELD", "BAD_JSON", "BAD_MESSAGE",
    "BAD_PONG", "BAD_SDP", "BAD_STREAM_NAME", "CLIENT_CLOSED", "CLIENT_MESSAGES", "CLOSED",
    "CLOSE_CODES", "CODEC_CHANGED", "CONNECTION_FAILED", "CONNECT_TIMEOUT",
    "DEFAULT_MISSING_PINGS", "DEFAULT_PING_INTERVAL_MS", "DISCONNECTED", "DRAINING",
    "DUPLICATE_ID", "ENDED_STATE", "ESTABLISHED", "FAILED", "HELLO_REQUIRED", "HELLO_TIMEOUT",
    "ID_PATTERN", "INTERNAL_ERROR", "MAX_ID_LENGTH", "MAX_MESSAGE_BYTES", "MAX_MISSING_PINGS",
    "MAX_PING_INTERVAL_MS", "MAX_SEQ", "MAX_STREAMS", "MEDIA_TIMEOUT", "MESSAGES_PER_SECOND",
    "MESSAGE_BURST", "MESSAGE_TOO_BIG", "MIN_MISSING_PINGS", "MIN_PING_INTERVAL_MS",
    "NEGOTIATION_FAILED", "NODE_SHUTDOWN", "NOT_LIVE", "PATH", "PEER_CLOSED", "PING_TIMEOUT",
    "PLAYING", "PROTOCOL_VERSION", "PROXY_GONE", "PUBLISHING", "RATE_LIMITED", "REPLACED", "REPLACES",
    "RESUME_MS", "SERVER_MESSAGE_TYPES", "SESSION_CLOSED", "SESSION_LOST", "SESSION_STATES", "SLOW_READER",
    "STOPPED", "STOPPED_BY_CLIENT", "STREAM_BUSY", "STREAM_EVENTS", "STREAM_STATES",
    "SUPPORTED_VERSIONS", "TERMINAL_STATES", "TOO_MANY_SESSIONS", "TOO_MANY_STREAMS",
    "UNAUTHORIZED", "UNKNOWN_ID", "UNKNOWN_TYPE", "UNPUBLISHED", "UNSUPPORTED_VERSION",
    "WAIT_LIVE_MS", "Field", "ProtocolError", "answer", "check_stream_name",
    "clamp_missing_pings", "clamp_ping_interval", "close_code", "close_reason",
    "draining_data", "encode", "error", "error_from", "hello", "node_draining",
    "parse_client_message", "parse_server_message", "ping", "play", "pong", "publish",
    "session_closing", "state_data", "stop", "stream_event", "stream_state", "welcome"
]

PATH = "/ws"
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# The names below are the shared vocabulary (states, endings, refusals, channel codes)
# under the short names the session-channel code uses; each is defined once, there.
ESTABLISHED, DISCONNECTED, FAILED = SessionState
SESSION_STATES = tuple(SessionState)
PUBLISHING, UNPUBLISHED, PLAYING, STOPPED = (StreamState.PUBLISHING, StreamState.UNPUBLISHED,
                                             StreamState.PLAYING, StreamState.STOPPED)
STREAM_STATES = tuple(StreamState)
STREAM_EVENTS = tuple(StreamEvent)

STOPPED_BY_CLIENT = Ending.STOPPED
SESSION_CLOSED = Ending.SESSION_CLOSED
REPLACED = Ending.REPLACED
PEER_CLOSED = Ending.PEER_CLOSED
CONNECT_TIMEOUT = Ending.CONNECT_TIMEOUT
CONNECTION_FAILED = Ending.CONNECTION_FAILED
MEDIA_TIMEOUT = Ending.MEDIA_TIMEOUT
CODEC_CHANGED = Ending.CODEC_CHANGED
NODE_SHUTDOWN = Ending.NODE_SHUTDOWN
SESSION_LOST = Ending.SESSION_LOST
CLOSED = Ending.CLOSED

BAD_STREAM_NAME = Refusal.BAD_STREAM_NAME
BAD_SDP = Refusal.BAD_SDP
BAD_CODEC = Refusal.UNSUPPORTED_CODEC
NEGOTIATION_FAILED = Refusal.NEGOTIATION_FAILED
NOT_LIVE = Refusal.NOT_LIVE
STREAM_BUSY = Refusal.STREAM_BUSY
DRAINING = Refusal.DRAINING
TOO_MANY_SESSIONS = Refusal.TOO_MANY_SESSIONS
TOO_MANY_STREAMS = Refusal.TOO_MANY_STREAMS
INTERNAL_ERROR = Refusal.INTERNAL_ERROR
UNAUTHORIZED = Refusal.UNAUTHORIZED

BAD_JSON = ErrorCode.BAD_JSON
BAD_MESSAGE = ErrorCode.BAD_MESSAGE
UNKNOWN_TYPE = ErrorCode.UNKNOWN_TYPE
BAD_FIELD = ErrorCode.BAD_FIELD
ALREADY_WELCOMED = ErrorCode.ALREADY_WELCOMED
DUPLICATE_ID = ErrorCode.DUPLICATE_ID
UNKNOWN_ID = ErrorCode.UNKNOWN_ID
BAD_PONG = ErrorCode.BAD_PONG

HELLO_REQUIRED = ChannelClose.HELLO_REQUIRED
UNSUPPORTED_VERSION = ChannelClose.UNSUPPORTED_VERSION
RATE_LIMITED = ChannelClose.RATE_LIMITED
PING_TIMEOUT = ChannelClose.PING_TIMEOUT
MESSAGE_TOO_BIG = ChannelClose.MESSAGE_TOO_BIG
SLOW_READER = ChannelClose.SLOW_READER
CLIENT_CLOSED = ChannelClose.CLIENT_CLOSED
PROXY_GONE = ChannelClose.PROXY_GONE

# -- timing and limits -------------------------------------------------------------------
DEFAULT_PING_INTERVAL_MS = 250
MIN_PING_INTERVAL_MS = 100
MAX_PING_INTERVAL_MS = 5000
DEFAULT_MISSING_PINGS = 4
MIN_MISSING_PINGS = 1
MAX_MISSING_PINGS = 20
HELLO_TIMEOUT = 5.0  # seconds from the upgrade to a valid hello
MAX_MESSAGE_BYTES = 64 * 1024  # one text frame; a complete SDP offer fits easily
MAX_STREAMS = 8  # publish + play handles one session may hold at a time
MESSAGES_PER_SECOND = 50  # sustained rate of client messages
MESSAGE_BURST = 100  # bucket size; beyond it messages are dropped with an error
RESUME_MS = 10_000  # how long a node keeps the streams of a session whose socket broke

MAX_ID_LENGTH = 64
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
MAX_SEQ = 2 ** 53  # JSON-safe integer


class ProtocolError(ValueError):
    """A message that cannot be used: ``code`` and ``reason`` go into the error message;
    ``ref`` is the message's ``id`` (or its type) when known; ``field`` the bad field."""

    def __init__(self, code: str, reason: str, ref: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.ref = ref
        self.field = field


# -- field checks ------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Field:
    kind: str  # "str" | "int" | "number"
    required: bool = True
    max_length: int | None = None  # str only
    minimum: float | None = None
    maximum: float | None = None

    def check(self, name: str, value: Any) -> str | None:
        """None when fine, else what is wrong."""
        if self.kind == "str":
            if not isinstance(value, str):
                return f"{name} must be a string"
            if self.max_length is not None and len(value) > self.max_length:
                return f"{name} must be at most {self.max_length} characters"
            return None
        if self.kind == "int" and not _is_int(value):
            return f"{name} must be an integer"
        if self.kind == "number" and not _is_number(value):
            return f"{name} must be a number"
        if self.minimum is not None and value < self.minimum:
            return f"{name} must be at least {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"{name} must be at most {self.maximum:g}"
        return None


_ID = Field("str", max_length=MAX_ID_LENGTH)
_SEQ = Field("int", minimum=0, maximum=MAX_SEQ)
_STREAM = Field("str", max_length=256)  # the name rule itself is checked by the node
_SDP = Field("str", max_length=MAX_MESSAGE_BYTES)

CLIENT_MESSAGES: dict[str, dict[str, Field]] = {
    "hello": {
        "version": Field("int", minimum=0, maximum=MAX_SEQ),
        "ping_interval": Field("number", required=False, minimum=0, maximum=MAX_SEQ),
        "missing_pings": Field("int", required=False, minimum=0, maximum=MAX_SEQ),
        "token": Field("str", required=False, max_length=4096),
        "client": Field("str", required=False, max_length=200),
        # resume a session whose socket broke (its id and the welcome's resume_token)
        "resume": Field("str", required=False, max_length=MAX_ID_LENGTH),
        "resume_token": Field("str", required=False, max_length=128),
    },
    "pong": {"seq": _SEQ},
    "ping": {"seq": _SEQ},
    "publish": {"id": _ID, "stream": _STREAM, "sdp": _SDP,
                REPLACES: Field("str", required=False, max_length=MAX_ID_LENGTH)},
    "play": {"id": _ID, "stream": _STREAM, "sdp": _SDP,
             WAIT_LIVE_MS: Field("int", required=False, minimum=0, maximum=MAX_WAIT_LIVE_MS)},
    "stop": {"id": _ID},
}

SERVER_MESSAGE_TYPES = ("welcome", "ping", "pong", "answer", "stream_state", "stream_event",
                        "node_draining", "session_closing", "error")


def _decode(text: str | bytes) -> dict:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_JSON, "message is not UTF-8") from None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_JSON, "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_MESSAGE, "message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_FIELD, "message needs a string \"type\"", field="type")
    return message


def parse_client_message(text: str | bytes) -> dict:
    """The message as a dict, fields checked; unknown fields are kept but not used."""
    message = _decode(text)
    kind = message["type"]
    schema = CLIENT_MESSAGES.get(kind)
    if schema is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}",
                            ref=kind[:40])
    ref = message.get("id") if isinstance(message.get("id"), str) and \
        ID_PATTERN.fullmatch(message["id"]) else kind
    for name, field in schema.items():
        if name not in message:
            if field.required:
                raise ProtocolError(BAD_FIELD, f"{kind} needs {name!r}", ref, name)
            continue
        problem = field.check(name, message[name])
        if problem:
            raise ProtocolError(BAD_FIELD, problem, ref, name)
    if "id" in schema and not ID_PATTERN.fullmatch(message["id"]):
        raise ProtocolError(BAD_FIELD, "id must be 1-64 of letters, digits, '_', '.', ':', '-'",
                            kind, "id")
    return message


def parse_server_message(text: str | bytes) -> dict:
    """For clients: a JSON object with a known ``type`` (other fields are not checked)."""
    message = _decode(text)
    if message["type"] not in SERVER_MESSAGE_TYPES:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {message['type'][:40]!r}")
    return message


def check_stream_name(name: str) -> str | None:
    """None when usable, else the reason (the same rule as /whip/{stream})."""
    if valid_stream_name(name):
        return None
    return "stream names are 1-128 letters, digits, '_', '.', '-'"


def encode(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"))


def clamp_ping_interval(ms: float | None) -> int:
    if ms is None:
        return DEFAULT_PING_INTERVAL_MS
    return int(min(MAX_PING_INTERVAL_MS, max(MIN_PING_INTERVAL_MS, round(ms))))


def clamp_missing_pings(n: int | None) -> int:
    if n is None or n == 0:  # 0 (a client that does not check) still gets the default
        return DEFAULT_MISSING_PINGS
    return min(MAX_MISSING_PINGS, max(MIN_MISSING_PINGS, n))


# -- client messages ---------------------------------------------------------------------
def hello(ping_interval: float | None = None, missing_pings: int | None = None,
          token: str | None = None, client: str | None = None,
          version: int = PROTOCOL_VERSION, resume: tuple[str, str] | None = None) -> dict:
    """``resume``: (session id, resume_token) of a session whose socket broke: the node
    hands its streams to this socket if it still keeps them (``welcome.resumed``)."""
    message: dict[str, Any] = {"type": "hello", "version": version}
    if resume is not None:
        message["resume"], message["resume_token"] = resume
    if ping_interval is not None:
        message["ping_interval"] = ping_interval
    if missing_pings is not None:
        message["missing_pings"] = missing_pings
    if token:
        message["token"] = token
    if client:
        message["client"] = client
    return message


def pong(seq: int) -> dict:
    return {"type": "pong", "seq": seq}


def ping(seq: int, t: int | None = None) -> dict:
    message: dict[str, Any] = {"type": "ping", "seq": seq}
    if t is not None:
        message["t"] = t
    return message


def publish(id: str, stream: str, sdp: str, replaces: str | None = None) -> dict:
    """``replaces``: the session id of this publisher's previous media session on the
    stream (from its ``answer``): the node lets it take over at once."""
    message = {"type": "publish", "id": id, "stream": stream, "sdp": sdp}
    if replaces:
        message[REPLACES] = replaces
    return message


def play(id: str, stream: str, sdp: str, wait_live_ms: int | None = None) -> dict:
    """``wait_live_ms``: wait up to this long for a publisher instead of FAILED not_live."""
    message: dict[str, Any] = {"type": "play", "id": id, "stream": stream, "sdp": sdp}
    if wait_live_ms:
        message[WAIT_LIVE_MS] = wait_live_ms
    return message


def stop(id: str) -> dict:
    return {"type": "stop", "id": id}


# -- server messages ---------------------------------------------------------------------
def welcome(session: str, ping_interval: int, missing_pings: int, limits: dict,
            draining: bool = False, resume_token: str | None = None,
            resumed: bool = False, proxied: bool = False, node: str | None = None) -> dict:
    """``resume_token``: what a client sends to take the session over from a broken
    socket (within ``limits.resume_ms``); ``resumed``: this socket took one over;
    ``proxied``: the socket came through a proxy (the node may outlive a broken path);
    ``node``: the node's id (a resume through a proxy asks for ``/ws?node=``)."""
    message = {"type": "welcome", "version": PROTOCOL_VERSION, "session": session,
               "ping_interval": ping_interval, "missing_pings": missing_pings,
               "limits": limits, "draining": draining, "resumed": resumed, "proxied": proxied}
    if resume_token:
        message["resume_token"] = resume_token
    if node:
        message["node"] = node
    return message


def answer(id: str, stream: str, sdp: str, session: str, resource: str) -> dict:
    return {"type": "answer", "id": id, "stream": stream, "sdp": sdp, "session": session,
            "resource": resource}


def state_data(stream: str, state: str, code: str | None = None,
               reason: str | None = None) -> dict:
    """The fields of a stream state, as both the socket and server-sent events carry them."""
    return {"stream": stream, "state": state, "code": code, "reason": reason}


def stream_state(id: str, stream: str, state: str, code: str | None = None,
                 reason: str | None = None) -> dict:
    return {"type": "stream_state", "id": id, **state_data(stream, state, code, reason)}


def stream_event(id: str, stream: str, event: str, **data: Any) -> dict:
    return {"type": "stream_event", "id": id, "stream": stream, "event": event, **data}


def draining_data(reason: str = "node is draining", redirect: str | None = None,
                  ends_in: float | None = None) -> dict:
    """node_draining fields (also the data of the server-sent event of that name).
    ``redirect`` is a relative URL (a path) or None: never an absolute one."""
    if redirect is not None and ("://" in redirect or redirect.startswith("//")):
        raise ValueError("redirect must be relative")
    return {"code": DRAINING, "reason": reason, "redirect": redirect, "ends_in": ends_in}


def node_draining(**kwargs: Any) -> dict:
    return {"type": "node_draining", **draining_data(**kwargs)}


def session_closing(code: str, reason: str) -> dict:
    return {"type": "session_closing", "code": code, "reason": reason}


def error(code: str, reason: str, ref: str | None = None, field: str | None = None) -> dict:
    message: dict[str, Any] = {"type": "error", "code": code, "reason": reason, "ref": ref}
    if field is not None:
        message["field"] = field
    return message


def error_from(exc: ProtocolError) -> dict:
    return error(exc.code, exc.reason, exc.ref, exc.field)


def close_reason(reason: str) -> str:
    """A close frame carries at most 123 bytes of reason."""
    data = reason.encode()[:123]
    return data.decode("utf-8", "ignore")
