"""When Exact refuses a chain: its access token (401 on an API call) or its refresh token.

Contract (a part of ``ChainBroker``, which supplies ``services`` and ``_save``):
- ``rejected(chain, token)``: Exact answered 401 to ``token``; True when that is the chain's current
  access token (newly). The next refresh then goes upstream as soon as Exact allows one.
- ``probe_due(chain)``: while Exact refuses the access token and allows no new one yet, True (once)
  when one call may go with it anyway to see whether Exact takes it again: after 5, 20, 80 and 320 s,
  a handful of errors at most, inside the error budget. ``accepted(chain)``: Exact answered such a
  call with anything but 401; the refusal is over.
- ``_needs_reauth(chain, why, retry_at)``: the chain needs a person (ERROR in the log); with
  ``retry_at`` the proxy still tries Exact once more then. ``_reauth_answer(chain)``: Exact's final
  ``invalid_grant``, or while a retry is due a 429 with ``Retry-After`` (both marked ``reauth``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.clock import Clock, utc_text
from proxy.tokens.answers import TokenAnswer, oauth_error
from proxy.tokens.chains import Chain

if TYPE_CHECKING:
    from proxy.services import Services

log = logging.getLogger("exact_proxy.tokens")

PROBE_FIRST, PROBES = 5.0, 4  # after a 401, a call tests the token again after 5, 20, 80, 320 s


class Rejections:
    services: Services

    @property
    def clock(self) -> Clock:
        return self.services.clock

    def _save(self, chain: Chain) -> None:  # pragma: no cover - the broker's
        raise NotImplementedError

    def rejected(self, chain: Chain, token: str) -> bool:
        """Exact answered 401 to ``token``. True when that is the chain's current access token (newly)."""
        if token != chain.access_token or chain.rejected_at >= chain.issued_at > 0:
            return False
        now = self.clock.time()
        chain.rejected_at = now
        chain.probes, chain.next_probe_at = 0, now + PROBE_FIRST
        self._save(chain)
        allowed = max(chain.issued_at + self.services.policy.tokens.min_refresh_interval, chain.paused_until)
        log.warning("Exact refused the current access token of chain %s (app %s, user %s) with 401: the next "
                    "refresh goes to Exact %s", chain.id, chain.client_id, chain.user or "?",
                    "now" if allowed <= now else f"when it allows one, at {utc_text(allowed)}")
        return True

    def probe_due(self, chain: Chain) -> bool:
        """While Exact refuses a chain's access token and allows no new one yet: True (once) when one
        call may go with it anyway to see whether Exact takes it again (an outage that ended), after
        5 s, then 20, 80, 320 s: a handful of errors at most, well inside the error budget."""
        if not chain.rejected_at or chain.rejected_at < chain.issued_at:
            return False
        now = self.clock.time()
        if now < chain.next_probe_at or chain.probes >= PROBES:
            return False
        chain.probes += 1
        chain.next_probe_at = now + PROBE_FIRST * 4 ** chain.probes
        return True

    def accepted(self, chain: Chain) -> None:
        """Exact answered a call with the chain's current access token, not with 401: it takes it again."""
        if chain.rejected_at and chain.rejected_at >= chain.issued_at:
            chain.rejected_at = chain.next_probe_at = 0.0
            chain.probes = 0
            if chain.reauth_retry_at:  # the proxy's own verdict, not Exact's refusal of the refresh token
                chain.needs_reauth, chain.reauth_retry_at = None, 0.0
            self._save(chain)
            log.info("Exact accepts the access token of chain %s (app %s) again", chain.id, chain.client_id)

    def _needs_reauth(self, chain: Chain, why: str, retry_at: float = 0.0) -> TokenAnswer:
        chain.needs_reauth, chain.reauth_retry_at = why, retry_at
        self._save(chain)
        log.error("TOKEN CHAIN %s (app %s, user %s) NEEDS A NEW AUTHORIZATION: %s. %s%s", chain.id,
                  chain.client_id, chain.user or "?", why, self.reauth_text(chain),
                  f" (the proxy tries Exact once more at {utc_text(retry_at)})" if retry_at else "")
        return self._reauth_answer(chain)

    def _reauth_answer(self, chain: Chain) -> TokenAnswer:
        """A chain that needs a person: Exact's final ``invalid_grant`` when its refresh token was refused;
        while the proxy will still try Exact once more (its access token was refused), a 429 with
        ``Retry-After`` until then, so a tool's next run after that works again."""
        now = self.clock.time()
        if chain.reauth_retry_at > now:
            wait = int(chain.reauth_retry_at - now) + 1
            return TokenAnswer(429, oauth_error("temporarily_unavailable", f"Exact refused the access token of "
                               f"chain {chain.id} (401); the proxy asks Exact for a new one in {wait} s. "
                               + self.reauth_text(chain)), {"Retry-After": str(wait)},
                               f"refused (Exact refused chain {chain.id}'s token; new one in {wait} s)",
                               reauth=True)
        return TokenAnswer(400, oauth_error("invalid_grant", self.reauth_text(chain)), {},
                           "refused (chain needs a new authorization)", reauth=True)

    # -- upstream ----------------------------------------------------------------------------------
    def reauth_text(self, chain: Chain) -> str:
        return (f"token chain {chain.id} of app {chain.client_id} needs a new authorization by a person "
                f"({chain.needs_reauth}). Open the app's authorization URL (/api/oauth2/auth?client_id="
                f"{chain.client_id}&redirect_uri=...&response_type=code) in a browser through this proxy, and "
                "let the tool exchange the code; every tool then follows the new chain")

