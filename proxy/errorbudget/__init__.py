"""The error budget: count Exact's 400/401/403/404 per app, division and endpoint, and never let them
reach Exact's block (``proxy.filters.error_budget`` is the filter; these are its parts)."""
