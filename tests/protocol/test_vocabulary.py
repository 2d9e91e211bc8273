import json

from unbroken.protocol.faults import TRY_ELSEWHERE, Fault, reconnect_fault
from unbroken.protocol.refusals import REFUSALS, Refusal, Refused
from unbroken.protocol.vocabulary import vocabulary
from unbroken.protocol.whip_whep import Resource, events_link, parse_events_link
from unbroken.protocol.states import Kind


def test_vocabulary_is_json_and_complete():
    data = json.loads(json.dumps(vocabulary()))
    assert data["stream_states"] == ["PUBLISHING", "UNPUBLISHED", "PLAYING", "STOPPED", "FAILED"]
    assert set(data["refusals"]) == {r.value for r in Refusal}
    assert data["refusals"]["not_live"]["status"] == 409
    assert data["refusals"]["unsupported_codec"]["http_error"] == "negotiation_failed"
    assert set(data["try_elsewhere"]) == {f.value for f in TRY_ELSEWHERE}
    assert data["whip_whep"]["replaces"] == "replaces"


def test_every_refusal_has_a_wire_form():
    assert set(REFUSALS) == set(Refusal)
    exc = Refused(Refusal.UNAUTHORIZED, "no")
    assert (exc.status, exc.http_code, exc.wire.close_code) == (401, "unauthorized", 4001)


def test_resource_location_round_trip_and_link():
    resource = Resource(Kind.PLAY, "cam-1", "abc")
    assert resource.location == "/whep/cam-1/abc"
    assert Resource.parse("http://h:1/whep/cam-1/abc") == resource
    assert Resource.parse("/nothing") is None
    assert parse_events_link([events_link(resource)]) == "/whep/cam-1/abc/events"
    assert parse_events_link(['</x>; rel="other"']) is None


def test_reconnect_fault_by_code():
    assert reconnect_fault({"code": "draining"}) is Fault.NODE_DRAINING
    assert reconnect_fault({"reason": "codec changed"}) is Fault.RECONNECT
