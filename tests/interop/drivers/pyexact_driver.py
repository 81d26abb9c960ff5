"""python-exact-online (PyPI) as a user runs it: its URLs are hard-coded to https://start.exactonline.be,
so it keeps them and reaches the proxy as HTTPS_PROXY (CONNECT interception, the proxy's CA trusted
through REQUESTS_CA_BUNDLE). Client id as the upper-case bare GUID. Its token cache is a file inside the
installed package (``exactonline/cache/<client id>.txt``); it refreshes 30 s before expiry through
requests-oauthlib. It pages by cutting the literal ``https://start.exactonline.be/api/v1/<division>/``
off ``__next``."""

from __future__ import annotations

import _job
import requests
from exactonline.api import ExactOnlineAPI
from exactonline.cachehandler import CacheHandler
from exactonline.endpoints.base import APIEndpoint
from exactonline.models.accounts import Account, AccountList


def _ids(listobj):
    if listobj.hasError:
        raise RuntimeError(f"HTTP {listobj.error.http_status}: {listobj.error.message}")
    return [a.ID for a in listobj.items()]


def build(spec):
    cid = spec["client_id"]
    CacheHandler().deleteCache(cid)
    if spec.get("tokens"):
        t = spec["tokens"]
        CacheHandler().setCache(cid, {"token": t["access_token"], "refreshToken": t["refresh_token"],
                                      "expiresOn": int(t["received_at"] + int(t["expires_in"]))})
    api = ExactOnlineAPI(cid, spec["secret"])
    # the library builds "Country eq 'NL' or IsSupplier eq false" from this
    fields, operator = {"Country": "NL", "IsSupplier": "false"}, "or"
    assert spec["filter"] == "Country eq 'NL' or IsSupplier eq false", spec["filter"]

    def authorize():
        url = api.authHandler.getAuthURL(spec["redirect_uri"])
        r = requests.get(url, allow_redirects=False)
        assert r.status_code in (302, 303), (r.status_code, r.text)
        api.authHandler.retrieveToken(r.headers["Location"])

    def list_all():
        # accounts.list() insists on a filter; the generic endpoint is what an unfiltered export uses
        return _ids(APIEndpoint(api, "crm/Accounts", Account, AccountList).list())

    def list_filtered():
        return _ids(api.accounts.list(filter=fields, filter_operator=operator))

    def get_one():
        account = api.accounts.get(spec["key"])
        if account.hasError:
            raise RuntimeError(f"HTTP {account.error.http_status}: {account.error.message}")
        return [account.ID]

    return {"authorize": authorize, "list_all": list_all, "list_filtered": list_filtered, "get_one": get_one}


if __name__ == "__main__":
    _job.main(build)
