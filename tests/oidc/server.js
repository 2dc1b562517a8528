// An OpenID Connect server for visa's login tests, with Keycloak's URL layout or as a plain issuer
// (a research federation's proxy, such as EGI Check-in or eduTEAMS). Loopback only.
//
//   node server.js            (environment below; prints "ready <issuer>" once listening)
//
// OIDC_LAYOUT        keycloak (default): the issuer http://host:port/realms/<realm>, Keycloak's endpoint
//                    paths, roles in realm_access.roles and Keycloak's back-channel logout;
//                    plain: the issuer http://host:port/ with oidc-provider's own endpoint paths, and
//                    roles as eduperson_entitlement values (below); no back-channel logout
// OIDC_USERINFO_ONLY 1 (plain layout): like some federation proxies, access tokens are opaque (unless a
//                    resource is asked for) and the profile claims, entitlements included, are given at
//                    the userinfo endpoint only, not in the ID token
// OIDC_PORT          port on 127.0.0.1 (default 0: any free port)
// OIDC_REALM         realm name (default visa)
// OIDC_REDIRECTS     comma-separated redirect URIs allowed for the client `visa`
// OIDC_POST_LOGOUT   comma-separated post-logout redirect URIs
// OIDC_CLIENT_SECRET secret of the client `visa` (default visa-secret)
// OIDC_FRONT_HOST    the host name the issuer names (default 127.0.0.1), as Keycloak's KC_HOSTNAME:
//                    browsers use it, the server still listens on 127.0.0.1 (a *.localhost name
//                    reaches it in Chromium), and a client may call it on 127.0.0.1 (back channel)
//
// Endpoints (keycloak layout), as Keycloak serves them under /realms/<realm>:
//   /.well-known/openid-configuration, /protocol/openid-connect/{auth,token,certs,userinfo,
//   logout,token/introspect,revoke}. Logout also accepts Keycloak's back-channel form
//   (POST refresh_token + client credentials -> 204), which ends the user's session.
// Access tokens are JWTs (resource indicators): resource urn:visa:api (aud "visa", the
// default), urn:visa:short (aud "visa", valid 2 s) and urn:other:api (aud "other").
// Users: alice/alice-password, bob/bob-password, sam/sam-password (realm role visa-admin).
// alice has a unix identity (claims uidNumber, gidNumber, gidNumbers, homeDirectory); bob and sam none.
// Scope visa:tokens (asked for like any scope) is granted to access tokens of every resource.
// POST /test/register?user=<name>&password=<pw> signs a new user up with the username they chose.
//                    (&sub=<subject>: with that subject, as a facility's directory would have it)
// POST /test/roles?user=<name>&roles=<comma-separated> changes a user's realm roles from now
// on (the next token or refresh carries them), as an administrator would in Keycloak.
// In the plain layout a role r is the entitlement urn:mace:egi.eu:group:vo.example.eu:r:role=member#aai.example.eu
// (membership of the VO's subgroup r), and every user also has the VO's own membership.
// POST /test/rotate rotates the signing key: a new key signs from now on, the old ones stay published
// (with ?retire=1 they are withdrawn). Sessions, grants and tokens survive it.

import http from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { URL } from 'node:url';
import Provider, { errors } from 'oidc-provider';

const LAYOUT = process.env.OIDC_LAYOUT || 'keycloak';
if (!['keycloak', 'plain'].includes(LAYOUT)) throw new Error(`OIDC_LAYOUT: ${LAYOUT} is not keycloak or plain`);
const KEYCLOAK = LAYOUT === 'keycloak';
const USERINFO_ONLY = !KEYCLOAK && process.env.OIDC_USERINFO_ONLY === '1';
const REALM = process.env.OIDC_REALM || 'visa';
const PORT = Number(process.env.OIDC_PORT || 0);
const SECRET = process.env.OIDC_CLIENT_SECRET || 'visa-secret';
const list = (v, d) => (v ? v.split(',').filter(Boolean) : d);
const PREFIX = KEYCLOAK ? `/realms/${REALM}` : '';
const OIDC = '/protocol/openid-connect';
const VO = 'urn:mace:egi.eu:group:vo.example.eu';
const entitlement = (group) => `${VO}${group ? `:${group}` : ''}:role=member#aai.example.eu`;

let signingKeys = [];
function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

const USERS = {
  alice: {
    sub: '4f1c2a8e-0000-4000-8000-00000000a11c', password: 'alice-password', name: 'Alice Liddell', email: 'alice@example.org', roles: ['offline_access'],
    // Keycloak maps these from LDAP (user attribute mappers uidNumber, gidNumber, homeDirectory; groups as gids).
    posix: { uidNumber: 23456, gidNumber: 23456, gidNumbers: [24001, 24002], homeDirectory: '/home/alice' },
  },
  bob: { sub: '4f1c2a8e-0000-4000-8000-000000000b0b', password: 'bob-password', name: 'Bob Builder', email: 'bob@example.org', roles: [] },
  sam: { sub: '4f1c2a8e-0000-4000-8000-0000000005a3', password: 'sam-password', name: 'Sam Staff', email: 'sam@example.org', roles: ['visa-admin', 'visa-staff'] },
};
const bySub = Object.fromEntries(Object.entries(USERS).map(([username, u]) => [u.sub, { username, ...u }]));

const RESOURCES = {
  'urn:visa:api': { audience: 'visa', accessTokenTTL: 300 },
  'urn:visa:short': { audience: 'visa', accessTokenTTL: 2 },
  'urn:other:api': { audience: 'other', accessTokenTTL: 300 },
};

function claimsOf(user) {
  const roles = KEYCLOAK
    ? { realm_access: { roles: user.roles } }
    : { eduperson_entitlement: [entitlement(''), ...user.roles.map(entitlement)] };
  return {
    sub: user.sub,
    preferred_username: user.username,
    name: user.name,
    email: user.email,
    email_verified: true,
    ...roles,
    ...(user.posix || {}),
  };
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body>${body}</body></html>`;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function start() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  const issuer = `http://${process.env.OIDC_FRONT_HOST || '127.0.0.1'}:${server.address().port}${PREFIX || '/'}`;
  signingKeys = [newSigningKey()];
  // A new Provider per key rotation: its keys are fixed at construction. Sessions, grants and
  // tokens live in oidc-provider's memory adapter, one per process, so they carry over.
  let provider = makeProvider();
  let callback = provider.callback();

  function makeProvider() {
  const p = new Provider(issuer, {
    clients: [{
      client_id: 'visa',
      client_secret: SECRET,
      redirect_uris: list(process.env.OIDC_REDIRECTS, ['http://127.0.0.1/auth/callback']),
      post_logout_redirect_uris: list(process.env.OIDC_POST_LOGOUT, ['http://127.0.0.1/login']),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    clientAuthMethods: ['client_secret_post', 'client_secret_basic'],
    pkce: { required: () => true },
    jwks: { keys: signingKeys },
    ...(KEYCLOAK ? {
      routes: {
        authorization: `${OIDC}/auth`,
        token: `${OIDC}/token`,
        jwks: `${OIDC}/certs`,
        userinfo: `${OIDC}/userinfo`,
        end_session: `${OIDC}/logout`,
        introspection: `${OIDC}/token/introspect`,
        revocation: `${OIDC}/revoke`,
      },
    } : {}),
    scopes: ['openid', 'profile', 'email', 'offline_access', 'visa:tokens'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'realm_access', 'eduperson_entitlement', 'uidNumber', 'gidNumber',
        'gidNumbers', 'homeDirectory'],
      email: ['email', 'email_verified'],
    },
    conformIdTokenClaims: USERINFO_ONLY, // false, like Keycloak: profile claims in the ID token too
    findAccount: async (_ctx, sub) => {
      const user = bySub[sub];
      return user && { accountId: sub, claims: async () => claimsOf(user) };
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => true,
    extraTokenClaims: async (_ctx, token) => {
      const user = bySub[token.accountId];
      if (!user) return undefined;
      const { sub, ...rest } = claimsOf(user); // eslint-disable-line no-unused-vars
      return rest;
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // Keycloak logs out at once when the RP names itself; do the same (no confirm page).
        logoutSource: async (ctx, form) => {
          ctx.body = page('Logging out', `${form}<input type="hidden" name="logout" value="yes" form="op.logoutForm">`
            + '<script>document.forms[0].submit()</script><button type="submit" form="op.logoutForm">Log out</button>');
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf || (USERINFO_ONLY ? undefined : 'urn:visa:api'),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          const info = RESOURCES[resource];
          if (!info) throw new errors.InvalidTarget();
          return { scope: 'openid profile email visa:tokens', accessTokenFormat: 'jwt', ...info };
        },
      },
    },
    interactions: { url: async (_ctx, interaction) => `${PREFIX}/login-actions/${interaction.uid}` },
    ttl: { Session: 3600, Grant: 3600, Interaction: 600, AuthorizationCode: 60, IdToken: 300, RefreshToken: 3600 },
    cookies: { keys: ['visa-test-oidc-cookie-key'] },
  });
  p.proxy = false;
  return p;
  }

  async function readForm(req) {
    let body = '';
    for await (const chunk of req) {
      body += chunk;
      if (body.length > 65536) throw new Error('body too large');
    }
    return new URLSearchParams(body);
  }

  function send(res, status, html) {
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  }

  // Keycloak's back-channel logout: POST refresh_token with the client's credentials.
  async function backchannelLogout(req, res, form) {
    const basic = (req.headers.authorization || '').match(/^Basic (.+)$/i);
    const [id, secret] = basic
      ? Buffer.from(basic[1], 'base64').toString().split(':').map(decodeURIComponent)
      : [form.get('client_id'), form.get('client_secret')];
    if (id !== 'visa' || secret !== SECRET) {
      res.writeHead(401, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ error: 'unauthorized_client' }));
    }
    const token = await provider.RefreshToken.find(form.get('refresh_token') || '');
    if (!token || token.clientId !== id) {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ error: 'invalid_grant', error_description: 'Invalid refresh token' }));
    }
    const session = token.sessionUid && await provider.Session.findByUid(token.sessionUid);
    if (session) await session.destroy();
    const grant = await provider.Grant.find(token.grantId);
    if (grant) await grant.destroy();
    await provider.RefreshToken.adapter.revokeByGrantId(token.grantId);
    await provider.AccessToken.adapter.revokeByGrantId(token.grantId);
    await token.destroy();
    res.writeHead(204);
    return res.end();
  }

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const { prompt, params, session } = details;
    if (prompt.name === 'login') {
      if (req.method === 'POST' && action === 'login') {
        const form = await readForm(req);
        const user = USERS[form.get('username')];
        if (!user || user.password !== form.get('password')) {
          return send(res, 200, loginPage(uid, params, 'Invalid username or password.'));
        }
        return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
      }
      return send(res, 200, loginPage(uid, params, ''));
    }
    // consent: first-party client, granted at once
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  function loginPage(uid, params, error) {
    return page('Sign in', `<h1>Sign in to ${esc(REALM)}</h1>`
      + (error ? `<p id="input-error">${esc(error)}</p>` : '')
      + `<form id="kc-form-login" method="post" action="${PREFIX}/login-actions/${esc(uid)}/login">`
      + `<input id="username" name="username" value="${esc(params.login_hint || '')}" autofocus>`
      + '<input id="password" name="password" type="password">'
      + '<button id="kc-login" type="submit">Sign In</button></form>');
  }

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      if (url.pathname === '/test/register' && req.method === 'POST') {
        // Self-registration, as a realm that lets anyone sign up: the username is the user's choice.
        const name = url.searchParams.get('user') || '';
        if (!name || Object.hasOwn(USERS, name)) return send(res, 409, 'taken');
        const user = { sub: url.searchParams.get('sub') || randomUUID(), password: url.searchParams.get('password') || '', name, email: `${name}@example.org`, roles: [] };
        USERS[name] = user;
        bySub[user.sub] = { username: name, ...user };
        res.writeHead(201);
        return res.end();
      }
      if (url.pathname === '/test/roles' && req.method === 'POST') {
        const user = USERS[url.searchParams.get('user')];
        if (!user) return send(res, 404, 'no such user');
        // in place: bySub's entries share this array
        user.roles.splice(0, user.roles.length, ...(url.searchParams.get('roles') || '').split(',').filter(Boolean));
        res.writeHead(204);
        return res.end();
      }
      if (url.pathname === '/test/rotate' && req.method === 'POST') {
        const kept = url.searchParams.get('retire') ? [] : signingKeys;
        signingKeys = [newSigningKey(), ...kept];
        provider = makeProvider();
        callback = provider.callback();
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ kid: signingKeys[0].kid }));
      }
      if (!url.pathname.startsWith(PREFIX)) return send(res, 404, 'not found');
      const rest = url.pathname.slice(PREFIX.length);
      const m = rest.match(/^\/login-actions\/([\w-]+)(?:\/(login))?$/);
      if (m) return await interaction(req, res, m[1], m[2]);
      if (KEYCLOAK && rest === `${OIDC}/logout` && req.method === 'POST'
          && (req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')
          && !(req.headers.cookie || '').includes('_session')) {
        const form = await readForm(req);
        if (form.has('refresh_token')) return await backchannelLogout(req, res, form);
        return send(res, 400, 'expected refresh_token');
      }
      req.originalUrl = req.url;
      req.url = req.url.slice(PREFIX.length) || '/';
      return callback(req, res);
    } catch (err) {
      console.error(err);
      if (!res.headersSent) send(res, err.statusCode || 500, esc(err.message));
      return undefined;
    }
  });
  console.log(`ready ${issuer}`);
}

start().catch((err) => {
  console.error(err);
  process.exit(1);
});
