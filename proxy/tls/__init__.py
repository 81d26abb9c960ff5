"""TLS towards the tools: the local CA (``ca``), server contexts (``contexts``), ``CONNECT`` interception
(``intercept``), the ``ca`` commands (``commands``), and ``connect_to`` for reaching an upstream name at
another address. The connection to Exact is always verified; nothing here touches that."""
