// @quantix-ict/exact-online (npm) as a user runs it under Node 20. Its URLs are hard-coded to
// https://start.exactonline.nl and it calls Node's global fetch, which ignores HTTPS_PROXY before Node 24;
// so, as its users do, we route fetch through undici's ProxyAgent (the proxy intercepts the CONNECT) and
// trust the proxy's CA with NODE_EXTRA_CA_CERTS. Tokens live in $TMPDIR/quantix-ict-exact/*.json. It
// never refreshes ahead: it refreshes after a 401 and sends the call again, without limit. It does not
// follow __next: a user pages with the $skiptoken of __next. It needs the division on every call.
// Job file and result: as drivers/_job.py describes.
'use strict';
const fs = require('node:fs');
const { ProxyAgent, setGlobalDispatcher } = require('undici');

const proxy = process.env.HTTPS_PROXY || process.env.https_proxy;
if (proxy) setGlobalDispatcher(new ProxyAgent(proxy));
const { Exact } = require('@quantix-ict/exact-online');

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf-8'));
const result = { steps: {}, error: null, started: Date.now() / 1000 };

function write() {
  result.ended = Date.now() / 1000;
  fs.writeFileSync(spec.out, JSON.stringify(result));
}

async function main() {
  const exact = new Exact({ clientId: spec.client_id, clientSecret: spec.secret, redirectUri: spec.redirect_uri });
  const division = String(spec.division);

  async function all(params) {
    const ids = [];
    let query = { ...params };
    for (;;) {
      const d = await exact.request({ endpoint: '/crm/Accounts', params: query, division });
      if (!d || !Array.isArray(d.results)) throw new Error('no results in ' + JSON.stringify(d).slice(0, 300));
      for (const row of d.results) ids.push(row.ID);
      if (!d.__next) return ids;
      query = { ...params, $skiptoken: new URL(d.__next).searchParams.get('$skiptoken') };
    }
  }

  const steps = {
    async authorize() {
      const res = await fetch(exact.getLoginUrl({}), { redirect: 'manual' });
      if (res.status !== 302 && res.status !== 303) throw new Error('authorize: HTTP ' + res.status);
      const code = new URL(res.headers.get('location')).searchParams.get('code');
      await exact.connect(code);
      return null;
    },
    list_all: () => all({ $select: 'ID,Name' }),
    list_filtered: () => all({ $select: 'ID,Name', $filter: spec.filter }),
    async get_one() {
      const d = await exact.request({ endpoint: `/crm/Accounts(guid'${spec.key}')`, division });
      return [d.ID];
    },
  };

  if (spec.tokens) {
    exact.setAccessToken(spec.tokens.access_token);
    exact.setRefreshToken(spec.tokens.refresh_token);
  }
  if (!spec.steps.includes('authorize')) {
    // a later run: the tokens an earlier run stored, read back as the README says
    if (!(await exact.initialize())) throw new Error('initialize failed');
    console.log('initialized');
  }
  let authorizedAt = Date.now() / 1000;
  for (const name of spec.steps) {
    if (name === 'wait') {
      const at = spec.refresh_at || authorizedAt + spec.refresh_after;
      await new Promise((r) => setTimeout(r, Math.max(0, at * 1000 - Date.now())));
      continue;
    }
    const ids = await steps[name]();
    if (name === 'authorize') authorizedAt = Date.now() / 1000;
    let label = name;
    for (let n = 2; label in result.steps; n++) label = `${name}#${n}`;
    const entry = { t: Date.now() / 1000 };
    if (ids) Object.assign(entry, { rows: ids.length, ids: [...ids].sort() });
    result.steps[label] = entry;
    console.log(`step ${label}: ${ids ? ids.length : '-'} rows`);
  }
}

main().then(() => { write(); process.exit(0); }, (err) => {
  result.error = String(err && err.stack || err).slice(0, 2000);
  console.error(result.error);
  write();
  process.exit(1);
});
