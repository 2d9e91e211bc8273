"""The session channel's server side, one concept per module: ``outbox`` (ordered sends and
the close handshake), ``limits`` (what a session may hold, its rate limit), ``hello``
(handshake and auth), ``pings``, ``streams`` (a socket's publishes and plays),
``socket_session`` (one socket from welcome to close) and ``registry`` (every socket)."""
