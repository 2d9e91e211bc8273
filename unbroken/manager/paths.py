"""Replica-independent session paths: what the manager puts in `Location` and `Link`.

A node answers with `Location: /whep/{stream}/{session}`. Through the manager it becomes
`/whep/{stream}/{node}.{session}`, `{node}` being the node id in unpadded URL-safe
base64: any manager replica finds the node from the path alone (and its address in the
shared registry), so replicas come and go freely. `.` is in neither alphabet, so the
split is unambiguous. A path whose node is not registered and live is refused (404):
the manager only ever forwards to registered nodes.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["ForgedPath", "SessionRef", "join_segment", "rewrite_link", "rewrite_location",
           "split_segment"]

_SEGMENT = re.compile(r"^([A-Za-z0-9_-]{1,172})\.([A-Za-z0-9_-]{1,128})$")
# a session resource path inside a header value: /whip|whep/{stream}/{session}
_RESOURCE = re.compile(r"(/(?:whip|whep)/[^/?#<>\s]+/)([^/?#<>\s;,]+)")


class ForgedPath(LookupError):
    """A session path the manager never gave out (malformed node part)."""


class SessionRef(tuple):
    """(node_id, session) named."""

    __slots__ = ()

    def __new__(cls, node_id: str, session: str) -> "SessionRef":
        return super().__new__(cls, (node_id, session))

    @property
    def node_id(self) -> str:
        return self[0]

    @property
    def session(self) -> str:
        return self[1]


def _encode(node_id: str) -> str:
    return base64.urlsafe_b64encode(node_id.encode()).rstrip(b"=").decode()


def join_segment(node_id: str, session: str) -> str:
    """The public session segment for `session` on `node_id`."""
    return f"{_encode(node_id)}.{session}"


def split_segment(segment: str) -> SessionRef:
    """The node id and the node's session id in a public segment; ForgedPath otherwise."""
    found = _SEGMENT.match(segment)
    if found is None:
        raise ForgedPath(f"not a manager session path: {segment[:80]!r}")
    encoded = found.group(1)
    try:
        node_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ForgedPath("malformed node part") from None
    if not node_id or not node_id.isprintable():
        raise ForgedPath("malformed node part")
    return SessionRef(node_id, found.group(2))


def rewrite_location(value: str, node_id: str) -> str:
    """A node's Location (or any header value holding session paths), rewritten so that
    every session path in it names the node."""
    return _RESOURCE.sub(lambda m: m.group(1) + join_segment(node_id, m.group(2)), value)


rewrite_link = rewrite_location
