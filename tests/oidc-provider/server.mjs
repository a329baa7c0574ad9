// A real OpenID provider (oidc-provider) for Roster's integration tests.
//
//   node server.mjs CONFIG.json
//
// Listens on a random loopback port, prints one line of JSON to stdout,
// {"issuer":"http://127.0.0.1:PORT","port":PORT}, and serves until it is
// killed. The configuration (see tests/api/oidc_provider.rs) names the
// clients, the accounts (by login name), and per client a way to tamper with
// the ID tokens it is issued, to play a misbehaving or hostile provider.
// GET /__stats counts the discovery, JWKS and token requests served.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import * as jose from 'jose';

// oidc-provider prints its development-mode notices with console.info (to
// stdout, where only the ready line may go) and its warnings with
// console.warn. The notices and the warnings about the development-only
// features this test provider uses on purpose are dropped; anything else
// goes to stderr.
const DEV_NOISE = [
  'oidc-provider NOTICE: ',
  'oidc-provider WARNING: a quick start development-only',
];
function toStderr(...args) {
  const text = args.map(String).join(' ');
  if (!DEV_NOISE.some((prefix) => text.startsWith(prefix))) {
    process.stderr.write(`${text}\n`);
  }
}
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;

// Imported after the console is redirected: the module warns on import on
// an unsupported runtime.
const { default: Provider, interactionPolicy } = await import('oidc-provider');

const TAMPER_MODES = new Set(['audience', 'issuer', 'hs256', 'none', 'expired']);

function fail(message) {
  process.stderr.write(`oidc test provider: ${message}\n`);
  process.exit(2);
}

const configPath = process.argv[2];
if (!configPath) fail('usage: node server.mjs CONFIG.json');
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const issuerHost = config.issuer_host || '127.0.0.1';
const accounts = config.accounts || {};
const clients = (config.clients || []).map((client) => {
  if (client.tamper != null && !TAMPER_MODES.has(client.tamper)) {
    fail(`client ${client.client_id}: unknown tamper mode ${JSON.stringify(client.tamper)}`);
  }
  return client;
});
const tamperFor = new Map(clients.map((c) => [c.client_id, c.tamper ?? null]));
const secretFor = new Map(clients.map((c) => [c.client_id, c.client_secret]));

// The port comes first: the issuer URL names it.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://${issuerHost}:${port}`;

// One RS256 signing key, kept to re-sign tampered ID tokens.
const kid = `test-${randomBytes(6).toString('hex')}`;
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const privateJwk = {
  ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig',
};

// devInteractions signs in any login at all. One without an account gets
// the sign-in form again (by default the request would fail with a
// server_error once it found no account).
const { Check } = interactionPolicy;
const policy = interactionPolicy.base();
policy.get('login').checks.add(new Check(
  'unknown_account',
  'there is no account for this login',
  (ctx) => (ctx.oidc.session.accountId && !ctx.oidc.account
    ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT),
));

const stats = { discovery_fetches: 0, jwks_fetches: 0, token_requests: 0 };

const provider = new Provider(issuer, {
  clients: clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris || [],
    post_logout_redirect_uris: c.post_logout_redirect_uris || [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // oidc-provider accepts the secret in the body (client_secret_post) from
    // a client registered with either of the two.
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  responseTypes: ['code'],
  jwks: { keys: [privateJwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },

  async findAccount(ctx, id) {
    const account = Object.hasOwn(accounts, id) ? accounts[id] : undefined;
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  claims: {
    openid: ['sub', 'tenants'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // The scopes' claims go into the ID token too, not only to userinfo.
  conformIdTokenClaims: false,
  // Roster names the tenant being signed in to on the authorization request.
  extraParams: ['tenant'],
  pkce: { methods: ['S256'] },
  interactions: { policy },

  // Every requested scope and claim is granted at once, so the login form
  // is the only page the browser meets.
  async loadExistingGrant(ctx) {
    const { client, session, account } = ctx.oidc;
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== account.accountId) {
      grant = new Grant({ clientId: client.clientId, accountId: account.accountId });
    }
    const scopes = ctx.oidc.requestParamOIDCScopes;
    if (scopes.size) grant.addOIDCScope([...scopes].join(' '));
    const claims = ctx.oidc.requestParamClaims;
    if (claims.size) grant.addOIDCClaims([...claims]);
    await grant.save();
    return grant;
  },

  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // The confirmation form, its "yes" button inside the form.
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><html><head><title>Sign out</title></head><body>
${form.replace('</form>', '<button type="submit" name="logout" value="yes">Yes, sign me out</button></form>')}
</body></html>`;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = '<!DOCTYPE html><html><head><title>Signed out</title></head><body>Signed out</body></html>';
      },
    },
  },
  // A plain error page that names the error, for tests to assert on.
  async renderError(ctx, out) {
    ctx.type = 'html';
    const text = Object.entries(out).map(([k, v]) => `${k}: ${v}`).join('\n');
    ctx.body = `<!DOCTYPE html><html><head><title>Error</title></head><body><pre>${text
      .replace(/&/g, '&amp;').replace(/</g, '&lt;')}</pre></body></html>`;
  },
});

// Errors to stderr: a crash with its stack, a refused request in a line.
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc test provider server_error on ${ctx.method} ${ctx.path}: ${err?.stack || err}\n`);
});
for (const event of ['authorization.error', 'grant.error', 'end_session.error', 'userinfo.error',
  'interaction.error', 'discovery.error', 'jwks.error']) {
  provider.on(event, (ctx, err) => {
    const why = [err?.error_description, err?.error_detail].filter(Boolean).join(': ');
    process.stderr.write(`oidc test provider ${event} on ${ctx.method} ${ctx.path}: ${err?.message || err}${
      why ? ` (${why})` : ''}\n`);
  });
}

const paths = {
  discovery: '/.well-known/openid-configuration',
  jwks: provider.pathFor('jwks'),
  token: provider.pathFor('token'),
};

// Counters and GET /__stats.
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/__stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.method === 'GET' && ctx.path === paths.discovery) stats.discovery_fetches += 1;
  if (ctx.method === 'GET' && ctx.path === paths.jwks) stats.jwks_fetches += 1;
  if (ctx.method === 'POST' && ctx.path === paths.token) stats.token_requests += 1;
  await next();
});

// A wrong-issuer provider: discovery claims an issuer its tokens don't carry.
if (config.advertise_issuer_host) {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'GET' && ctx.path === paths.discovery && ctx.body && typeof ctx.body === 'object') {
      ctx.body = { ...ctx.body, issuer: `http://${config.advertise_issuer_host}:${port}` };
    }
  });
}

// Per-client tampering with the ID token the token endpoint answers with.
async function tamper(mode, idToken, clientId) {
  const header = jose.decodeProtectedHeader(idToken);
  const payload = jose.decodeJwt(idToken);
  const rs256 = (claims) => new jose.SignJWT(claims)
    .setProtectedHeader({ ...header, alg: 'RS256', kid })
    .sign(privateKey);
  switch (mode) {
    case 'audience':
      return rs256({ ...payload, aud: 'someone-else' });
    case 'issuer':
      return rs256({ ...payload, iss: 'http://evil.example' });
    case 'hs256':
      return new jose.SignJWT(payload)
        .setProtectedHeader({ alg: 'HS256' })
        .sign(new TextEncoder().encode(secretFor.get(clientId)));
    case 'none': {
      const encode = (obj) => jose.base64url.encode(JSON.stringify(obj));
      return `${encode({ alg: 'none' })}.${encode(payload)}.`;
    }
    case 'expired': {
      // The whole validity window moved back so that it ended an hour ago.
      const shift = payload.exp - Math.floor(Date.now() / 1000) + 3600;
      return rs256({ ...payload, iat: payload.iat - shift, exp: payload.exp - shift });
    }
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'POST' || ctx.path !== paths.token || typeof ctx.body?.id_token !== 'string') return;
  const clientId = ctx.oidc?.client?.clientId;
  const mode = tamperFor.get(clientId);
  if (mode) {
    ctx.body = { ...ctx.body, id_token: await tamper(mode, ctx.body.id_token, clientId) };
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);

function shutdown() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
