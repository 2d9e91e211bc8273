import pytest
from aiortc import RTCRtpReceiver

from unbroken.media import rtc_internals


def test_aiortc_private_hooks_exist():
    """aiortc is pinned exactly because media/ reaches into these internals."""
    rtc_internals.check_hooks()


def test_a_missing_hook_is_named(monkeypatch):
    monkeypatch.setattr(rtc_internals, "HOOKS", rtc_internals.HOOKS + (
        (RTCRtpReceiver, "__no_such_queue", "a hook aiortc never had"),))
    rtc_internals.check_hooks.cache_clear()
    try:
        with pytest.raises(rtc_internals.MissingHook, match=r"RTCRtpReceiver\.__no_such_queue"):
            rtc_internals.check_hooks()
    finally:
        rtc_internals.check_hooks.cache_clear()


def test_every_private_name_used_is_listed():
    """Each `x._name` the module reads or writes appears in HOOKS (or is its own)."""
    import inspect
    import re

    source = inspect.getsource(rtc_internals)
    listed = {name.lstrip("_") for _, name, _ in rtc_internals.HOOKS}
    used = set(re.findall(r"(?<!self)\.(_[A-Za-z]\w*)", source))
    own = {"_setup", "_use", "_bind", "_protect_and_send", "_binding",
           "_tap", "_inner", "_on_frame", "_never", "_dtls", "_ice_connection",
           "_session", "_transport", "_addr", "_cdata", "_buffer", "_view", "_length",
           "_SelectorTransport", "_batch", "_target", "_fastpath"}
    foreign = {u for u in used - own
               if u.split("__")[-1] not in listed and u.lstrip("_") not in listed}
    assert not foreign, f"private names used but not in HOOKS: {sorted(foreign)}"


def test_aiortc_version_is_the_pinned_one():
    import aiortc
    assert aiortc.__version__ == "1.16.0"
