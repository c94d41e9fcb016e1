"""The web pages: the broker's own page (``/ui``) and the client's dashboard over many brokers."""
