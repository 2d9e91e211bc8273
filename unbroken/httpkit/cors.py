"""CORS: any origin may call the public API (browsers publish and play from anywhere)."""

from __future__ import annotations

__all__ = ["CORS_HEADERS"]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    # Via: a proxied answer (the stream manager's); the browser SDK then re-attaches a lost
    # event stream instead of ending the session
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post, "
                                     "Retry-After, Via",
    "Access-Control-Max-Age": "86400",
}
