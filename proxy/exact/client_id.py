"""One Exact app, one name: client ids compared in one normal form.

Contract
- ``normal_client_id(text)`` is the form every part of the proxy keys an app by (the broker's chains,
  the call and error budgets, the status page, the metrics): surrounding white space removed, then one
  pair of surrounding braces, then lower case. Exact's app center shows ``{B81CC4DE-…}``; tools copy it
  with or without the braces, in either case, and Exact treats them all as one app.
- It is pure and cheap (cached); an empty or missing id stays empty.
- What goes to Exact is what the tool sent: the normal form is for comparing, not for rewriting.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1024)
def normal_client_id(text: str | None) -> str:
    if not text:
        return ""
    value = text.strip()
    if len(value) >= 2 and value[0] == "{" and value[-1] == "}":
        value = value[1:-1].strip()
    return value.lower()
