// A real OpenID provider (panva's certified `oidc-provider`) on loopback, for integration tests.
//
//   IDP_PORT=0 IDP_CLIENT_ID=gh-test IDP_CLIENT_SECRET=s3cret \
//   IDP_REDIRECT_URI=http://127.0.0.1:9999/cb node idp.mjs
//
// Listens on 127.0.0.1:IDP_PORT (0 = any free port) with issuer http://localhost:<port>, and
// once listening prints exactly one line to stdout, `READY http://localhost:<port>`, then runs
// until killed. Everything else (oidc-provider's development-mode warnings, errors) goes to
// stderr. Exits non-zero on a configuration or startup error.
//
// One confidential client: authorization code flow only, S256 PKCE required, secret accepted
// with client_secret_basic or client_secret_post at the token endpoint. Login is the built-in
// development form (any login, any password); consent is granted automatically. The account's
// `sub` is the login typed; `email` is `<login>@idp.test` (or the login itself when it contains
// `@`); `email_verified` is false only when the login starts with `unverified`; `name` is
// `User <login>`. The id_token carries the claims of the granted scopes.

import * as http from "node:http";

// oidc-provider prints notices with console.info; stdout carries only the READY line.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

function fail(message) {
  console.error(`idp: ${message}`);
  process.exit(1);
}

process.on("uncaughtException", (err) => fail(err?.stack ?? String(err)));
process.on("unhandledRejection", (err) => fail(err?.stack ?? String(err)));

function required(name) {
  const value = process.env[name];
  if (value === undefined || value === "") {
    console.error(`idp: ${name} must be set`);
    process.exit(2);
  }
  return value;
}

const portText = required("IDP_PORT");
const clientId = required("IDP_CLIENT_ID");
const clientSecret = required("IDP_CLIENT_SECRET");
const redirectUri = required("IDP_REDIRECT_URI");

const port = Number(portText);
if (!/^\d+$/.test(portText) || !Number.isInteger(port) || port > 65535) {
  console.error(`idp: IDP_PORT must be a port number (0 for any free port), got ${portText}`);
  process.exit(2);
}

const { default: Provider } = await import("oidc-provider");

// Listen first so that port 0 resolves to the real port before the issuer is fixed.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(port, "127.0.0.1", () => {
    server.off("error", reject);
    resolve();
  });
});
server.on("error", (err) => fail(err?.stack ?? String(err)));

const issuer = `http://localhost:${server.address().port}`;

const SCOPES = ["openid", "email", "profile"];
const CLAIMS = {
  openid: ["sub"],
  email: ["email", "email_verified"],
  profile: ["name"],
};
const ALL_CLAIMS = Object.values(CLAIMS).flat();

function account(id) {
  const claims = {
    sub: id,
    email: id.includes("@") ? id : `${id}@idp.test`,
    email_verified: !id.startsWith("unverified"),
    name: `User ${id}`,
  };
  return {
    accountId: id,
    // oidc-provider filters these down to the granted scopes/claims.
    async claims() {
      return { ...claims };
    },
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      id_token_signed_response_alg: "RS256",
    },
  ],
  // client_secret_post is translated to client_secret_basic below, before the provider sees it.
  clientAuthMethods: ["client_secret_basic", "client_secret_post"],
  pkce: { required: () => true },
  scopes: SCOPES,
  claims: CLAIMS,
  // Put the granted claims in the id_token even though an access token is issued too.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
  },
  // The library defaults, spelled out (seconds) so it does not print a notice for each.
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Grant: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
  },
  cookies: {
    // Plain HTTP on loopback: cookies are not `Secure` as long as the request is not HTTPS.
    long: { httpOnly: true, sameSite: "lax" },
    short: { httpOnly: true, sameSite: "lax" },
  },
  async findAccount(_ctx, id) {
    return account(id);
  },
  // No consent screen: grant every supported scope and claim to the (only) client.
  async loadExistingGrant(ctx) {
    const grantId =
      ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPES.join(" "));
    grant.addOIDCClaims(ALL_CLAIMS);
    await grant.save();
    return grant;
  },
});
provider.proxy = false;

// oidc-provider authenticates a client only with its one registered method. Accept the secret
// in the body as well by rewriting it into an Authorization: Basic header; the provider then
// reads the remaining (already consumed) body from req.body.
provider.use(async (ctx, next) => {
  if (
    ctx.method === "POST" &&
    ctx.path === "/token" &&
    ctx.get("authorization") === "" &&
    ctx.is("application/x-www-form-urlencoded")
  ) {
    const chunks = [];
    let size = 0;
    for await (const chunk of ctx.req.iterator({ destroyOnReturn: false })) {
      size += chunk.length;
      if (size > 56 * 1024) ctx.throw(413, "request entity too large");
      chunks.push(chunk);
    }
    const params = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
    const id = params.get("client_id");
    const secret = params.get("client_secret");
    if (id !== null && secret !== null) {
      params.delete("client_id");
      params.delete("client_secret");
      const enc = (s) => encodeURIComponent(s);
      ctx.req.headers.authorization = `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString("base64")}`;
    }
    ctx.req.body = params.toString();
  }
  await next();
});

for (const event of [
  "server_error",
  "authorization.error",
  "grant.error",
  "userinfo.error",
  "introspection.error",
  "revocation.error",
  "end_session.error",
]) {
  provider.on(event, (_ctx, err) => {
    console.error(`idp: ${event}: ${err?.message ?? err}${err?.error_description ? ` (${err.error_description})` : ""}`);
  });
}

server.on("request", provider.callback());

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

process.stdout.write(`READY ${issuer}\n`);
