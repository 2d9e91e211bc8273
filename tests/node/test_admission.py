import pytest

from unbroken.node.admission import USABLE_CODECS
from unbroken.protocol.sdp import section_without_codec

VIDEO = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 {codec}/90000\r\n"


@pytest.mark.parametrize("codec, unusable", [("VP8", None), ("H264", None), ("VP9", "video")])
def test_sections_without_a_usable_codec(codec, unusable):
    assert section_without_codec(VIDEO.format(codec=codec), USABLE_CODECS) == unusable
