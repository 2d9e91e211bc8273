from unbroken.media.munger import RtpMunger, seq_delta


def test_seq_delta_wraps():
    assert seq_delta(1, 65535) == 2
    assert seq_delta(65535, 1) == -2
    assert seq_delta(10, 10) == 0


def test_continuous_output_across_source_change():
    m = RtpMunger(90000)
    m.anchor(ssrc=1, seq=65530, ts=4294960000, now=0.0)
    out = [m.rewrite(s & 0xFFFF, (4294960000 + 3000 * i) & 0xFFFFFFFF, i / 30)
           for i, s in enumerate(range(65530, 65540))]
    seqs = [o[0] for o in out]
    assert all(seq_delta(b, a) == 1 for a, b in zip(seqs, seqs[1:]))
    last_seq, last_ts = out[-1]
    # the publisher comes back with a new SSRC and unrelated numbers 0.5 s later
    m.unanchor()
    m.anchor(ssrc=2, seq=100, ts=5000, now=9 / 30 + 0.5)
    seq, ts = m.rewrite(100, 5000, 9 / 30 + 0.5)
    assert seq == (last_seq + 1) & 0xFFFF
    assert (ts - last_ts) & 0xFFFFFFFF == 45000  # 0.5 s at 90 kHz
    seq2, ts2 = m.rewrite(101, 8000, 9 / 30 + 0.6)
    assert seq2 == (seq + 1) & 0xFFFF and ts2 == (ts + 3000) & 0xFFFFFFFF


def test_reordered_and_retransmitted_packets_keep_their_place():
    m = RtpMunger(48000)
    m.anchor(7, 1000, 0, 0.0)
    a = m.rewrite(1000, 0, 0)
    c = m.rewrite(1002, 1920, 0.04)
    b = m.rewrite(1001, 960, 0.05)  # late
    assert (b[0] - a[0]) & 0xFFFF == 1 and (c[0] - a[0]) & 0xFFFF == 2
    assert m.last_out_seq == c[0]


def test_packets_from_before_the_start_are_dropped():
    m = RtpMunger(90000)
    m.anchor(7, 500, 0, 0.0)
    assert m.rewrite(499, 0, 0.0) is None
    assert m.rewrite(500, 0, 0.0) is not None
