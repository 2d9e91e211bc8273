from unbroken.media import rtc_internals


def test_aiortc_private_hooks_exist():
    """aiortc is pinned exactly because media/ reaches into these internals."""
    rtc_internals.check_hooks()


def test_aiortc_version_is_the_pinned_one():
    import aiortc
    assert aiortc.__version__ == "1.16.0"
