"""ossobv exactonline (PyPI ``exactonline``) as its README sets it up: ``ExactApi`` over an ``IniStorage``
file with our URLs (https only, certificate verified: the proxy's HTTPS listener, trusted through
SSL_CERT_FILE), the bare GUID as client id. It refreshes 30 s before expiry and once after a 401."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import _job
from exactonline.api import ExactApi
from exactonline.storage.ini import IniStorage


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def build(spec):
    base = spec["base"].rstrip("/")
    ini = os.path.join(spec["work"], "exactonline.ini")
    transient = ""
    if spec.get("tokens"):
        t = spec["tokens"]
        transient = (f"access_expiry = {int(t['received_at'] + int(t['expires_in']))}\n"
                     f"access_token = {t['access_token']}\nrefresh_token = {t['refresh_token']}\n")
    with open(ini, "w") as fh:
        fh.write(f"[server]\nauth_url = {base}/api/oauth2/auth\nrest_url = {base}/api\n"
                 f"token_url = {base}/api/oauth2/token\n\n"
                 f"[application]\nbase_url = {spec['redirect_uri']}\nclient_id = {spec['client_id']}\n"
                 f"client_secret = {spec['secret']}\niteration_limit = 50\n\n"
                 f"[transient]\ndivision = {spec['division']}\n{transient}")
    storage = IniStorage(ini)
    api = ExactApi(storage=storage)

    def authorize():
        # the browser part: open the authorization URL, the emulator approves and redirects with a code
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(api.create_auth_request_url())
            raise AssertionError("the authorization URL did not redirect")
        except urllib.error.HTTPError as exc:
            assert exc.code in (302, 303), exc.code
            location = exc.headers["Location"]
        api.request_token(_job.code_from(location))

    def list_all():
        return [row["ID"] for row in api.relations.all()]

    def list_filtered():
        return [row["ID"] for row in api.relations.filter(filter=spec["filter"])]

    def get_one():
        return [api.relations.get(filter=f"ID eq guid'{spec['key']}'")["ID"]]

    return {"authorize": authorize, "list_all": list_all, "list_filtered": list_filtered, "get_one": get_one}


if __name__ == "__main__":
    _job.main(build)
