"""The OAuth token broker: one refresh chain per app and user, shared safely by every tool."""
