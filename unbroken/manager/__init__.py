"""The stream manager: node registry and heartbeats, routing, the shared cluster store, and
TLS. It knows nothing of a node's internals: it talks to nodes over their public HTTP API."""
