"""Stream names accepted in /whip/{stream}, /whep/{stream} and /api/v1/streams/{stream}."""

import pytest

from unbroken.protocol.names import valid_stream_name


@pytest.mark.parametrize("name", [
    "a", "Z", "0", "live", "cam-1", "cam_1", "cam.1", "A.b-c_d", "a" * 128, "1" + "-" * 127,
    "v1.2.3",
])
def test_valid(name):
    assert valid_stream_name(name)


@pytest.mark.parametrize("name", [
    "",
    "a" * 129,
    ".",
    "..",
    "a..b",
    "...",
    ".hidden",
    "_x",
    "-x",
    "a b",
    " a",
    "a\n",
    "a/b",
    "a\\b",
    "a%2Fb",
    "caf\u00e9",
    "\u0430bc",  # Cyrillic a
    "\u0661\u0662",  # Arabic-Indic digits
    "a\x00",
    "a?b",
    "a#b",
    "a:b",
])
def test_invalid(name):
    assert not valid_stream_name(name)
