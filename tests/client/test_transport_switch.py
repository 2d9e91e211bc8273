"""TransportSelector: failures in a row move the subscriber to its next transport."""

from unbroken.client.transport_switch import TransportSelector
from unbroken.client.whep import WhepError


def selector(allowed: int = 2) -> tuple[TransportSelector, list]:
    changes = []
    return TransportSelector(("whep", "hls"), allowed,
                             lambda t, why: changes.append((t, why))), changes


def test_failures_in_a_row_move_to_the_next_transport_and_back_around():
    s, changes = selector()
    s.failed("whep", ConnectionError())
    assert s.current == "whep" and not changes
    s.failed("whep", TimeoutError())
    assert s.current == "hls" and changes == [("hls", "whep failed 2 times")]
    s.failed("hls", ConnectionError())
    s.failed("hls", ConnectionError())
    assert s.current == "whep" and s.preferred == "whep"


def test_not_live_a_success_or_a_closed_selector_do_not_count():
    s, changes = selector()
    s.failed("whep", WhepError(409, "not live"))
    s.failed("whep", ConnectionError())
    s.worked("whep")
    s.failed("whep", ConnectionError())
    assert s.current == "whep"
    s.closed = True
    s.failed("whep", ConnectionError())
    assert s.current == "whep" and not changes


def test_choosing_reports_only_a_change():
    s, changes = selector()
    s.choose("whep", "switched")
    s.choose("hls", "switched")
    assert changes == [("hls", "switched")]
