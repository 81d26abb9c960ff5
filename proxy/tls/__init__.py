"""TLS towards the tools: the local CA (``ca``), server contexts (``contexts``), ``CONNECT`` interception
(``intercept``) and the ``ca`` commands (``commands``). Reaching an upstream name at another address
(``connect_to``) is ``proxy.http.resolver``'s. The connection to Exact is always verified; nothing here
touches that."""
