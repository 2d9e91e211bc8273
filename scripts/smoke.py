#!/usr/bin/env python3
"""The README's main commands on a fresh install, end to end: `unbroken up` on a free port,
its /healthz and its demo stream live, `unbroken play --no-decode --json` reports PLAYING and
frames, then both stop cleanly (SIGINT for the player, SIGTERM for the node: exit 0); then
the same for `unbroken up --cluster` (manager over self-signed TLS, origins, edges), played
through the manager.

Run with the Python of the environment the project is installed in (CI: a fresh venv).
Standard library only; every wait is bounded. Exits 1 with the processes' output on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

UNBROKEN = str(Path(sys.executable).with_name("unbroken"))  # the venv's console script
MIN_FRAMES = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, context: ssl.SSLContext | None = None) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def wait_for(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def demo_live(base: str) -> bool:
    body = get_json(f"{base}/api/v1/streams") or {}
    return any(s.get("name") == "demo" and s.get("live") for s in body.get("streams", []))


def play(base: str, log, env: dict | None = None) -> list[dict]:
    """Runs the player until it reports PLAYING and MIN_FRAMES frames, then Ctrl-C."""
    player = subprocess.Popen([UNBROKEN, "play", base, "demo", "--no-decode", "--json"],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    lines: list[dict] = []
    deadline = time.monotonic() + 20
    try:
        for line in player.stdout:  # a stats line comes every second while playing
            lines.append(json.loads(line))
            playing = any(e.get("kind") == "stream" and e.get("state") == "PLAYING"
                          for e in lines)
            if playing and lines[-1].get("kind") == "stats" and \
                    lines[-1].get("frames", 0) >= MIN_FRAMES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no PLAYING and {MIN_FRAMES} frames in 20 s: {lines}")
        else:
            raise RuntimeError(f"player exited early ({player.wait()}): {lines}")
        player.send_signal(signal.SIGINT)
        lines += [json.loads(line) for line in player.stdout]
        code = player.wait(timeout=10)
        if code != 0:
            raise RuntimeError(f"player exited {code} after Ctrl-C")
        if not any(e.get("state") == "STOPPED" for e in lines):
            raise RuntimeError(f"player did not report STOPPED: {lines[-3:]}")
        return lines
    finally:
        if player.poll() is None:
            player.kill()


def smoke_node() -> str:
    """`unbroken up`: a node with a live demo stream."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        node = subprocess.Popen([UNBROKEN, "up", "--port", str(port), "--host", "127.0.0.1"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for("/healthz", lambda: (get_json(f"{base}/healthz") or {}).get("status")
                     == "ok", 30)
            wait_for("the demo stream to be live", lambda: demo_live(base), 30)
            lines = play(base, log)
            stop(node, "unbroken up")
        except Exception as exc:
            raise Failed(exc, node, log) from None
    return f"unbroken up on :{port}, play reported PLAYING, {frames(lines)}"


def smoke_cluster() -> str:
    """`unbroken up --cluster`: a manager (self-signed TLS), origins, edges and a demo
    publisher; the player goes through the manager, trusting the certificate it made."""
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        cluster = subprocess.Popen([UNBROKEN, "up", "--cluster", "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            def cert_file() -> str | None:
                log.seek(0)
                found = re.search(r"\(certificate: (\S+)\)", log.read())
                return found.group(1) if found else None

            wait_for("the manager's certificate", cert_file, 30)
            context = ssl.create_default_context(cafile=cert_file())
            wait_for("the demo stream through the manager", lambda: any(
                s.get("name") == "demo" for s in (get_json(f"{base}/api/v1/streams", context)
                                                  or {}).get("streams", [])), 45)
            lines = play(base, log, env={**os.environ, "SSL_CERT_FILE": cert_file()})
            stop(cluster, "unbroken up --cluster")
        except Exception as exc:
            raise Failed(exc, cluster, log) from None
    return f"unbroken up --cluster on :{port}, play through the manager reported PLAYING, " \
           f"{frames(lines)}"


class Failed(Exception):
    """A smoke step failed: why, and the output of the process it ran."""

    def __init__(self, exc: Exception, proc: subprocess.Popen, log) -> None:
        if proc.poll() is None:
            proc.kill()
        log.seek(0)
        super().__init__(f"{exc}\n--- output ---\n{log.read()[-6000:]}")


def stop(proc: subprocess.Popen, name: str) -> None:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    if code != 0:
        raise RuntimeError(f"`{name}` exited {code} after SIGTERM")


def frames(lines: list[dict]) -> str:
    stats = [e for e in lines if e.get("kind") == "stats"][-1]
    return f"{stats['frames']} frames at {stats.get('fps', 0):.0f} fps, both stopped cleanly"


def main() -> int:
    for step in (smoke_node, smoke_cluster):
        try:
            print(f"smoke: ok: {step()}", flush=True)
        except Failed as exc:
            print(f"smoke: FAILED: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
