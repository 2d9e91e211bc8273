"""NodeConfig.load: defaults, a TOML file, command-line overrides, and what is refused."""

import pytest

from unbroken.node.config import NodeConfig


def write(tmp_path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


def test_defaults():
    config = NodeConfig.load()
    assert config == NodeConfig()
    assert config.host == "0.0.0.0" and config.port == 8080
    assert config.token == ""
    assert config.on_publisher_conflict == "reject"
    assert config.media_timeout == 0.8
    assert config.connect_timeout == 10.0
    assert config.retry_after == 1
    assert config.max_body_bytes == 64 * 1024
    assert config.max_sessions == 2000
    assert config.log_level == "info"


def test_toml_node_table(tmp_path):
    path = write(tmp_path, """
[node]
port = 9000
token = "s3cret"
media_timeout = 2          # an integer is fine for a float setting
on_publisher_conflict = "replace"
max_body_bytes = 4096
log_level = "debug"

[something_else]           # other tables are not the node's business
x = 1
""")
    config = NodeConfig.load(path)
    assert config.port == 9000
    assert config.token == "s3cret"
    assert config.media_timeout == 2
    assert config.on_publisher_conflict == "replace"
    assert config.max_body_bytes == 4096
    assert config.log_level == "debug"
    assert config.host == "0.0.0.0"  # untouched settings keep their defaults


def test_overrides_win_over_the_file_and_none_means_unset(tmp_path):
    path = write(tmp_path, '[node]\nport = 9000\ntoken = "file"\n')
    config = NodeConfig.load(path, port=9100, token=None, host="127.0.0.1")
    assert (config.port, config.token, config.host) == (9100, "file", "127.0.0.1")


def test_toml_without_node_table_is_read_at_top_level(tmp_path):
    assert NodeConfig.load(write(tmp_path, "port = 9001\n")).port == 9001


@pytest.mark.parametrize("text, message", [
    ("[node]\nprot = 9000\n", "unknown node settings: prot"),
    ("[node]\nport = 9000\nfoo = 1\nbar = 2\n", "unknown node settings: bar, foo"),
    ("bogus = true\n", "unknown node settings: bogus"),
])
def test_unknown_keys_are_rejected(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        NodeConfig.load(write(tmp_path, text))


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="unknown node settings: nope"):
        NodeConfig.load(nope=1)


@pytest.mark.parametrize("text, message", [
    ('on_publisher_conflict = "steal"', "on_publisher_conflict"),
    ("media_timeout = 0", "media_timeout"),
    ("media_timeout = 61", "media_timeout"),
    ("connect_timeout = -1", "connect_timeout"),
    ('port = "8080"', "port"),
    ("port = 70000", "port"),
    ("port = -1", "port"),
    ("port = 80.5", "port"),
    ("token = 1234", "token"),
    ("max_sessions = 0", "max_sessions"),
    ("max_body_bytes = -5", "max_body_bytes"),
    ("max_body_bytes = true", "max_body_bytes"),
    ("retry_after = -1", "retry_after"),
    ("drain_timeout = -0.5", "drain_timeout"),
    ('log_level = "loud"', "log_level"),
    ('media_timeout = "fast"', "media_timeout"),
])
def test_invalid_values_are_rejected(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        NodeConfig.load(write(tmp_path, f"[node]\n{text}\n"))


def test_node_that_is_not_a_table(tmp_path):
    with pytest.raises(ValueError, match="table"):
        NodeConfig.load(write(tmp_path, "node = 5\n"))


def test_malformed_toml(tmp_path):
    with pytest.raises(ValueError, match=r"node\.toml: .*line 1"):
        NodeConfig.load(write(tmp_path, "[node\nport = = 1\n"))


def test_missing_file(tmp_path):
    with pytest.raises(OSError):
        NodeConfig.load(str(tmp_path / "absent.toml"))
