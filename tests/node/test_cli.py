"""`python -m unbroken`: help, refusing bad settings with a message, starting from a config file."""

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unbroken", *args],
                          capture_output=True, text=True, timeout=30)


def test_node_help():
    result = run("node", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--token", "--config", "--media-timeout",
                   "--connect-timeout", "--on-publisher-conflict", "--drain-timeout",
                   "--log-level"):
        assert option in result.stdout


def test_command_is_required():
    result = run()
    assert result.returncode == 2
    assert "usage:" in result.stderr


@pytest.mark.parametrize("content, message", [
    ("[node]\nprot = 1\n", "unknown node settings: prot"),
    ("[node]\nmedia_timeout = 0\n", "media_timeout"),
    ('[node]\nlog_level = "loud"\n', "log_level"),
    ("[node\n", "node.toml"),  # TOML syntax error
    ("node = 1\n", "table"),
])
def test_bad_config_file_exits_with_a_message(tmp_path, content, message):
    path = tmp_path / "node.toml"
    path.write_text(content)
    result = run("node", "--config", str(path), "--port", "1")
    assert result.returncode != 0
    assert result.stderr.startswith("unbroken node: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path):
    result = run("node", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode != 0
    assert "unbroken node:" in result.stderr and "absent.toml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--media-timeout", "0"], "media_timeout"),
    (["--connect-timeout", "-3"], "connect_timeout"),
    (["--port", "99999"], "port"),
    (["--log-level", "chatty"], "log_level"),
])
def test_bad_option_value_exits_with_a_message(args, message):
    result = run("node", *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [
    ["--on-publisher-conflict", "steal"],
    ["--port", "eighty"],
    ["--no-such-option"],
])
def test_argparse_refusals(args):
    result = run("node", *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


async def test_node_starts_from_a_config_file(tmp_path, start_node, http):
    path = tmp_path / "node.toml"
    path.write_text('[node]\ntoken = "from-file"\nlog_level = "warning"\n')
    node = start_node("--config", str(path))
    async with http.get(f"{node.url}/api/v1/streams") as resp:
        assert resp.status == 401
    async with http.get(f"{node.url}/api/v1/streams",
                        headers={"Authorization": "Bearer from-file"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"streams": []}
