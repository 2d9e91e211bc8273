"""Find where a keyframe starts in an RTP payload, per codec (no decoding)."""

from __future__ import annotations

__all__ = ["h264_is_keyframe_start", "keyframe_detector", "vp8_is_keyframe_start"]

H264_SPS = 7
H264_IDR = 5
H264_STAP_A = 24
H264_FU_A = 28


def vp8_is_keyframe_start(payload: bytes) -> bool:
    """True for the first packet of a VP8 keyframe (RFC 7741 payload descriptor)."""
    size = len(payload)
    if size < 1:
        return False
    first = payload[0]
    start_of_partition = first & 0x10
    partition_id = first & 0x07
    if not start_of_partition or partition_id != 0:
        return False
    pos = 1
    if first & 0x80:  # X: extension byte follows
        if size < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if pos >= size:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    if pos >= size:
        return False
    # VP8 payload header: the P bit is 0 on keyframes
    return payload[pos] & 0x01 == 0


def h264_is_keyframe_start(payload: bytes) -> bool:
    """True for a packet that opens an H264 keyframe: carries an SPS, or starts an IDR."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (H264_SPS, H264_IDR):
        return True
    if nal_type == H264_STAP_A:
        pos = 1
        size = len(payload)
        while pos + 2 < size:
            length = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if length == 0 or pos + length > size:
                return False
            if payload[pos] & 0x1F in (H264_SPS, H264_IDR):
                return True
            pos += length
        return False
    if nal_type == H264_FU_A and len(payload) > 1:
        fu_header = payload[1]
        return bool(fu_header & 0x80) and (fu_header & 0x1F) in (H264_SPS, H264_IDR)
    return False


def keyframe_detector(mime_type: str):
    """The keyframe-start test for a codec, or None when every packet may start (audio)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_is_keyframe_start
    if mime == "video/h264":
        return h264_is_keyframe_start
    return None
