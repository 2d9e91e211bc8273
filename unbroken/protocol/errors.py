"""Error bodies shared by every HTTP endpoint: JSON {"error": code, "reason": text}."""

from __future__ import annotations

import json


def error_body(code: str, reason: str) -> str:
    return json.dumps({"error": code, "reason": reason})
