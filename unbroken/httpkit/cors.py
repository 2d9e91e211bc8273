"""CORS: any origin may call the public API (browsers publish and play from anywhere)."""

from __future__ import annotations

__all__ = ["CORS_HEADERS"]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post, "
                                     "Retry-After",
    "Access-Control-Max-Age": "86400",
}
