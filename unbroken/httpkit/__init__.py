"""Server pieces every unbroken HTTP service (the node, the coming stream manager) shares:
CORS, JSON error answers, bounded bodies, the token check, JSON logs, TOML config."""
