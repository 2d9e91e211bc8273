from unbroken.media.stats import IngestStats, RateWindow


def test_rates_over_a_second():
    w = RateWindow()
    start = w._window_start
    for i in range(30):
        w.add(1000, start + i / 30)
    count, size = w.rates(start + 1.0)
    assert 29 <= count <= 31 and 29000 <= size <= 31000
    assert w.rates(start + 3.5) == (0.0, 0.0)


def test_losses_counted_and_filled_by_late_packets():
    s = IngestStats()
    for seq in (1, 2, 5, 6):
        s.add(1, seq, 100, False, 0.0)
    assert s.lost == 2
    s.add(1, 3, 100, False, 0.0)
    assert s.lost == 1


def test_add_tells_how_many_packets_are_missing_before_each():
    s = IngestStats()
    assert [s.add(1, seq, 100, False, 0.0) for seq in (1, 2, 6, 4, 7)] == [0, 0, 3, 0, 0]
    assert s.add(2, 500, 100, False, 0.0) == 0  # a new source starts anywhere
