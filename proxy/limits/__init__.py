"""Exact's call limits as the proxy keeps them: windows per app and division (``division``), the queue in
front of them, token buckets (``buckets``), the book of all divisions and their persistence (``book``),
and the policy sections (``settings``). The filters ``call_budget`` and ``retry`` use them."""
