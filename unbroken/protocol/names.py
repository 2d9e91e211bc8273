"""Stream names: what the public paths accept."""

from __future__ import annotations

import re

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def valid_stream_name(name: str) -> bool:
    """1-128 of letters, digits, '_', '.', '-'; not starting with '.', '_' or '-'."""
    return bool(STREAM_NAME.fullmatch(name)) and ".." not in name
