from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from unbroken.media.receiver import TrackReceiver
from unbroken.media.sink import TrackSink
from unbroken.media.stream import Source, Stream, StreamChange

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)


class RecordingSink(TrackSink):
    def __init__(self, kind="video", mime="video/vp8") -> None:
        self.kind = kind
        self.mime = mime
        self.packets = []
        self.changes = 0
        self.reports = []

    def write(self, packet, now):
        self.packets.append(packet.sequence_number)

    def source_changed(self):
        self.changes += 1

    def send_sender_report(self, source_reports):
        self.reports.append(dict(source_reports))


class BrokenSink(RecordingSink):
    def write(self, packet, now):
        raise RuntimeError("broken subscriber")


def source(name, codecs=(VP8, H264)):
    receiver = TrackReceiver("video", {c.payloadType: c for c in codecs}, codecs[0],
                             lambda ssrc: None)
    return Source(name, {"video": receiver}), receiver


def rtp(receiver, seq, pt=96, ssrc=1):
    receiver.handle_rtp(RtpPacket(payload_type=pt, sequence_number=seq, ssrc=ssrc,
                                  payload=b"\x90\x80\x01\x00"))


def stream_with_events():
    stream = Stream("s")
    events = []
    stream.listeners.append(lambda event, s: events.append(event))
    return stream, events


def test_packets_reach_every_sink_even_past_a_broken_one():
    stream, events = stream_with_events()
    src, receiver = source("a")
    stream.attach(src)
    good = RecordingSink()
    stream.add_sink(BrokenSink())
    stream.add_sink(good)
    rtp(receiver, 1)
    rtp(receiver, 2)
    assert good.packets == [1, 2] and events == [StreamChange.ACTIVE]
    stream.remove_sink(good)
    rtp(receiver, 3)
    assert good.packets == [1, 2]


def test_a_new_source_replaces_the_old_one_and_sinks_continue():
    stream, events = stream_with_events()
    old, old_receiver = source("a")
    new, new_receiver = source("b")
    sink = RecordingSink()
    stream.attach(old)
    stream.add_sink(sink)
    stream.attach(new)
    rtp(old_receiver, 1)  # the old publisher is no longer forwarded
    rtp(new_receiver, 7, ssrc=2)
    assert sink.packets == [7] and sink.changes == 1
    assert events == [StreamChange.ACTIVE, StreamChange.INACTIVE, StreamChange.ACTIVE]
    stream.detach(new)
    assert not stream.live and events[-1] is StreamChange.INACTIVE and stream.idle


def test_a_codec_change_drops_the_sinks_of_the_old_codec():
    stream, events = stream_with_events()
    src, receiver = source("a")
    stream.attach(src)
    vp8, h264 = RecordingSink(mime="video/vp8"), RecordingSink(mime="video/h264")
    stream.add_sink(vp8)
    stream.add_sink(h264)
    rtp(receiver, 1, pt=102)  # the publisher switched to H264
    assert events[-1] is StreamChange.CODEC
    assert stream.sinks("video") == (h264,)


def test_sender_reports_reach_the_sinks():
    stream, _ = stream_with_events()
    src, receiver = source("a")
    stream.attach(src)
    sink = RecordingSink()
    stream.add_sink(sink)
    receiver.sender_reports[1] = (10, 20)
    stream.send_sender_reports()
    assert sink.reports == [{1: (10, 20)}]


class SeedableSink(RecordingSink):
    def __init__(self, kind="video", mime="video/vp8") -> None:
        super().__init__(kind, mime)
        self.seeded = None

    def seed(self, packets):
        self.seeded = [p.sequence_number for p in packets]


def vp8(receiver, seq, keyframe, ssrc=1):
    payload = b"\x90\x80\x01\x00" if keyframe else b"\x90\x80\x01\x01"  # P bit: inter
    receiver.handle_rtp(RtpPacket(payload_type=96, sequence_number=seq, ssrc=ssrc,
                                  timestamp=seq * 3000, payload=payload))


def test_a_new_video_sink_starts_from_the_latest_recent_keyframe():
    stream = Stream("s")
    src, receiver = source("a")
    stream.attach(src)
    early = SeedableSink()
    stream.add_sink(early)
    assert early.seeded is None  # no keyframe yet: nothing to start from
    for seq, key in ((1, True), (2, False), (3, True), (4, False), (5, False)):
        vp8(receiver, seq, key)
    late = SeedableSink()
    stream.add_sink(late)
    assert late.seeded == [3, 4, 5]  # from the latest keyframe on
    vp8(receiver, 6, False)
    assert late.packets == [6]  # then fed as every sink
    audio = SeedableSink(kind="audio", mime="audio/opus")
    stream.add_sink(audio)
    assert audio.seeded is None


def test_no_seed_from_an_old_keyframe_a_gone_source_or_across_a_hole(monkeypatch):
    from unbroken.media import stream as stream_module

    stream = Stream("s")
    src, receiver = source("a")
    stream.attach(src)
    vp8(receiver, 1, True)
    vp8(receiver, 2, False)
    assert stream.latest_keyframe() and not stream.latest_keyframe(max_age=-1)
    monkeypatch.setattr(stream_module, "SEED_MAX_AGE", -1.0)  # the keyframe is too old
    old = SeedableSink()
    stream.add_sink(old)
    assert old.seeded is None
    monkeypatch.undo()
    vp8(receiver, 2 + stream_module.MAX_GOP_PACKETS, False)  # a hole: undecodable past it
    assert stream.latest_keyframe() == ()
    vp8(receiver, 500, True)
    assert [p.sequence_number for p in stream.latest_keyframe()] == [500]
    stream.detach(src)
    assert stream.latest_keyframe() == ()
    new, new_receiver = source("b")
    stream.attach(new)
    assert stream.latest_keyframe() == ()  # the new source's own keyframe is needed


def test_the_kept_packets_are_bounded():
    from unbroken.media.stream import MAX_GOP_PACKETS

    stream = Stream("s")
    src, receiver = source("a")
    stream.attach(src)
    vp8(receiver, 0, True)
    for seq in range(1, MAX_GOP_PACKETS):
        vp8(receiver, seq, False)
    assert len(stream.latest_keyframe()) == MAX_GOP_PACKETS
    vp8(receiver, MAX_GOP_PACKETS, False)
    assert stream.latest_keyframe() == ()  # too long a GOP: joiners ask for a keyframe
