"""The demo: emulator + proxy + a naive legacy tool (``exact-proxy demo``)."""
