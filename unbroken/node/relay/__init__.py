"""Origin → edge relay: an edge serves streams it does not have by pulling each from an
upstream node over WHEP (one pull per stream, whatever its number of viewers).

- ``locator``: where a stream may be pulled from (``UpstreamLocator``; the static list of
  ``--upstream`` is ``StaticUpstreams``; ``ManagerUpstreams`` asks the stream manager);
- ``upstream_client``: the node's own WHEP client (offer POST, SSE events, DELETE);
- ``pull``: one stream's pull: its attempts, retry schedule, liveness and state;
- ``relay``: the node's pulls (``Relay``), started by viewers, ended by the linger.
"""

from .locator import ManagerUpstreams, StaticUpstreams, Upstream, UpstreamLocator
from .pull import Pull, PullState
from .relay import Relay

__all__ = ["ManagerUpstreams", "Pull", "PullState", "Relay", "StaticUpstreams", "Upstream",
           "UpstreamLocator"]
