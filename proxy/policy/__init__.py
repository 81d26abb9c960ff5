"""The policy: ``policies.yaml`` read with line numbers (``reader``), watched and reloaded (``watch``), the
upstreams and listeners (``hosts``), request matching (``matching``), and the document with its small
sections (``document``). ``from proxy.policy import Policy, load_policy`` is the way in.

The names are looked up on first use, so that a section's reader elsewhere (``proxy.http``,
``proxy.limits``) can import ``proxy.policy.reader`` without loading the whole document first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ gives, for the type checker
    from proxy.policy.document import Policy, load_policy, parse_policy
    from proxy.policy.reader import PolicyError

__all__ = ["Policy", "PolicyError", "load_policy", "parse_policy"]


def __getattr__(name: str) -> Any:
    if name == "PolicyError":
        from proxy.policy.reader import PolicyError

        return PolicyError
    if name in ("Policy", "load_policy", "parse_policy"):
        from proxy.policy import document

        return getattr(document, name)
    raise AttributeError(f"module 'proxy.policy' has no attribute {name!r}")
