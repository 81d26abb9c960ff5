"""The HTTP edge: the listening side, request parsing guards, bodies, header hygiene, the upstream resolver."""
