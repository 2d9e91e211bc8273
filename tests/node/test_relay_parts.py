"""The relay's parts without processes: the static locator, the retry schedule, the
edge settings."""

import pytest

from unbroken.node.config import NodeConfig
from unbroken.node.relay import StaticUpstreams, Upstream
from unbroken.node.relay.pull import RETRY_SCHEDULE, retry_delay


async def test_static_upstreams_name_every_url_with_the_token():
    locator = StaticUpstreams(["http://a:1/", "http://b:2"], token="t")
    assert await locator.locate("x") == (Upstream("http://a:1", "t"), Upstream("http://b:2", "t"))
    assert locator.describe() == {"kind": "static", "urls": ["http://a:1", "http://b:2"]}
    with pytest.raises(ValueError):
        StaticUpstreams([])


def test_retry_schedule_is_bounded_and_grows():
    delays = [retry_delay(n) for n in range(1, 20)]
    assert delays == sorted(delays)
    assert max(delays) == RETRY_SCHEDULE[-1] <= 5.0
    assert delays[0] <= 0.1


def test_edge_settings():
    config = NodeConfig.load(role="edge", upstream="http://o1:8080, http://o2:8080/")
    assert config.upstream_urls == ["http://o1:8080", "http://o2:8080"]
    assert NodeConfig().role == "standalone" and NodeConfig().relay_linger == 5.0
    for bad in (dict(role="edge"), dict(role="cache"), dict(upstream="http://o:1"),
                dict(role="edge", upstream="o:1"),
                dict(role="edge", upstream="http://o:1", relay_linger=-1.0)):
        with pytest.raises(ValueError):
            NodeConfig.load(**bad)
