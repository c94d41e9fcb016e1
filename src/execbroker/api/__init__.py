"""HTTP interfaces: thin routers over the broker service."""
