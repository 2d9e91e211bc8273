"""The Python SDK: publishers and subscribers whose streams restore themselves.

Layers, bottom up: transports open one session each and know nothing of restores
(``whip``, ``whep``, ``session`` for the session channel, ``hls``; ``signaling`` picks
WHIP/WHEP or the session channel); attempts wrap one transport session and report its
first fault (``attempt``, ``publisher.PublishAttempt``, ``play_attempts``,
``transport_switch``) with the ``watchdogs`` and ``network`` watcher; the restore loop
(``restorer``) asks a ``RestorePolicy`` (``policy``) when and where to try next and a
``UrlSource`` (``urls``; ``manager_routes`` asks a stream manager) for the URL to connect to; ``Publisher`` and ``Subscriber`` sit
on top.
"""

from .events import ClientEvent, RestoreReport
from .hls import HlsPlayer
from .manager_routes import ManagerRoutes, NoRoute, Route
from .options import RestoreOptions
from .policy import DefaultRestorePolicy, NextTry, RestoreContext, RestorePolicy
from .publisher import Publisher
from .session import SessionClient
from .sources import TrackFactory, capture_device, media_file, testsrc, tracks
from .subscriber import Subscriber
from .urls import ListedUrls, UrlSource
from .whep import WhepViewer
from .whip import WhipPublisher

__all__ = [
    "ClientEvent",
    "DefaultRestorePolicy",
    "HlsPlayer",
    "ListedUrls",
    "ManagerRoutes",
    "NextTry",
    "NoRoute",
    "Publisher",
    "RestoreContext",
    "RestoreOptions",
    "RestorePolicy",
    "RestoreReport",
    "Route",
    "SessionClient",
    "Subscriber",
    "TrackFactory",
    "UrlSource",
    "WhepViewer",
    "WhipPublisher",
    "capture_device",
    "media_file",
    "testsrc",
    "tracks",
]
