"""PullPeer: the edge's offer carries only what the node forwards, and an upstream's answer
becomes a Source of tapped tracks (negotiated against a real SubscriberPeer)."""

from unbroken.media.peer import SubscriberPeer
from unbroken.media.pull import PullPeer
from unbroken.media.stream import Stream


def rtpmaps(sdp: str) -> set[str]:
    return {line.split(" ", 1)[1].split("/")[0].lower()
            for line in sdp.splitlines() if line.startswith("a=rtpmap:")}


async def test_offer_is_recvonly_with_forwarded_codecs_only():
    peer = PullPeer("pull", Stream("s"))
    try:
        offer = await peer.offer()
        assert rtpmaps(offer) == {"opus", "vp8", "h264", "rtx"}
        assert offer.count("a=recvonly") == 2
    finally:
        await peer.close()


async def test_answer_of_an_upstream_subscriber_becomes_a_source():
    upstream = SubscriberPeer("up", Stream("s"))
    edge_stream = Stream("s")
    pull = PullPeer("pull", edge_stream)
    try:
        answer = await upstream.answer(await pull.offer())
        source = await pull.accept(answer)
        assert set(source.receivers) == {"audio", "video"}
        assert source.id == "pull"
        edge_stream.attach(source)
        assert edge_stream.live
    finally:
        await pull.close()
        await upstream.close()
    assert not edge_stream.live  # closing the pull detaches its source
