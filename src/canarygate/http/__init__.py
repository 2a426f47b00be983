"""The HTTP layer: parses the protocols, maps errors to status codes. Knows nothing of canaries."""
