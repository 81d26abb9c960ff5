"""exact-online-sdk (PyPI, carlospaiva) as a user sets it up: ``Settings`` with our base URL, the
client id as Exact's app centre shows it (``{GUID}``), token calls with HTTP Basic (the SDK's own way)."""

from __future__ import annotations

from datetime import UTC, datetime

import _job
import httpx
from exact_online_sdk import ExactOnlineClient, Settings
from exact_online_sdk.auth import ExactOnlineAuth, InMemoryTokenStorage, Token
from exact_online_sdk.config import AUTH_PATH, TOKEN_PATH


def build(spec):
    base = spec["base"].rstrip("/")
    settings = Settings(client_id=spec["client_id"], client_secret=spec["secret"],
                        redirect_uri=spec["redirect_uri"], base_url=base, auth_url=base + AUTH_PATH,
                        token_url=base + TOKEN_PATH, division=spec["division"])
    storage = InMemoryTokenStorage()
    if spec.get("tokens"):
        t = spec["tokens"]
        storage.set_token(Token(access_token=t["access_token"], token_type="Bearer",
                                refresh_token=t["refresh_token"],
                                expires_at=datetime.fromtimestamp(t["received_at"] + int(t["expires_in"]),
                                                                  UTC)))
    auth = ExactOnlineAuth(settings, storage=storage)
    client = ExactOnlineClient(settings, auth=auth)
    select = {"$select": "ID,Name,Country"}

    def authorize():
        r = httpx.get(auth.get_authorization_url(state="interop"), follow_redirects=False)
        assert r.status_code in (302, 303), (r.status_code, r.text)
        auth.exchange_code_for_token(_job.code_from(r.headers["location"]))

    def list_all():
        return [row["ID"] for page in client.iter_pages("crm/Accounts", params=select) for row in page]

    def list_filtered():
        params = {**select, "$filter": spec["filter"]}
        return [row["ID"] for page in client.iter_pages("crm/Accounts", params=params) for row in page]

    def get_one():
        row = client.get(f"crm/Accounts(guid'{spec['key']}')")
        return [row["ID"]]

    return {"authorize": authorize, "list_all": list_all, "list_filtered": list_filtered, "get_one": get_one}


if __name__ == "__main__":
    _job.main(build)
