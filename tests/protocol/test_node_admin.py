"""The node admin API's request body (unbroken.protocol.node_admin)."""

import pytest

from unbroken.protocol.node_admin import MAX_DRAIN_TIMEOUT_S, drain_request, parse_drain_request


def test_drain_request_round_trip():
    assert parse_drain_request(drain_request(2.5)) == 2.5
    assert parse_drain_request(drain_request()) is None
    assert parse_drain_request(None) is None
    assert parse_drain_request({"timeout_s": None}) is None
    assert drain_request(-3) == {"timeout_s": 0.0}


@pytest.mark.parametrize("bad", [[], "3", {"timeout": 3}, {"timeout_s": "3"}, {"timeout_s": True},
                                 {"timeout_s": -1}, {"timeout_s": float("nan")},
                                 {"timeout_s": MAX_DRAIN_TIMEOUT_S + 1}])
def test_bad_drain_requests_are_refused(bad):
    with pytest.raises(ValueError):
        parse_drain_request(bad)
