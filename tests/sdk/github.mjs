// A local stand-in for GitHub's OAuth app web flow and the REST calls a login needs, for
// integration tests (GitHub itself is unreachable from the test machine). Node built-ins only.
//
//   GH_PORT=0 GH_CLIENT_ID=gh-client GH_CLIENT_SECRET=s3cret \
//   GH_REDIRECT_URI=http://127.0.0.1:9999/cb node github.mjs
//
// Listens on 127.0.0.1:GH_PORT (0 = any free port) and, once listening, prints exactly one line
// to stdout, `READY http://localhost:<port>`, then runs until killed (SIGTERM/SIGINT: exit 0).
// Everything else goes to stderr. Missing or bad configuration: exit 2. Optional
// GH_CODE_TTL_SECONDS (default 600, GitHub's 10 minutes) shortens code lifetime for tests.
//
// URL layout is GitHub Enterprise Server's: the web flow at the root, the REST API under /api/v3.
//
//   GET  /login/oauth/authorize     client_id, redirect_uri?, scope?, state?, login? (test-only:
//                                   who signs in, default octocat; `denied` = user refuses),
//                                   code_challenge?, code_challenge_method? (S256 only)
//        -> 302 <redirect_uri>?code=<20 hex>&state=<state>   (approval is immediate)
//        -> 302 <registered uri>?error=redirect_uri_mismatch&error_description=…&error_uri=…&state=…
//        -> 302 <redirect_uri>?error=access_denied&error_description=…&error_uri=…&state=…
//        -> 404 text when client_id is missing/unknown
//   POST /login/oauth/access_token  client_id, client_secret (form/JSON body, query, or HTTP
//                                   Basic), code, redirect_uri?, code_verifier?
//        -> 200 {"access_token":"gho_…","token_type":"bearer","scope":"a,b"} with
//           `Accept: application/json`, else the same as application/x-www-form-urlencoded.
//           Errors are HTTP 200 too, {"error","error_description","error_uri"}:
//           incorrect_client_credentials, bad_verification_code, redirect_uri_mismatch.
//   GET  /api/v3/user               Authorization: Bearer|token <token>, User-Agent required
//   GET  /api/v3/user/emails        same; the token needs scope `user:email` or `user`
//        (like GitHub for an OAuth token lacking it: 404 {"message":"Not Found",…}).
//
// REST errors: no User-Agent -> 403 text/plain; no token -> 401 "Requires authentication";
// unknown token -> 401 "Bad credentials"; both {"message","documentation_url","status"}.

import * as http from "node:http";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

function log(message) {
  process.stderr.write(`github: ${message}\n`);
}

function configError(message) {
  log(message);
  process.exit(2);
}

process.on("uncaughtException", (err) => {
  log(err?.stack ?? String(err));
  process.exit(1);
});
process.on("unhandledRejection", (err) => {
  log(err?.stack ?? String(err));
  process.exit(1);
});

// ---------------------------------------------------------------- configuration

function required(name) {
  const value = process.env[name];
  if (value === undefined || value === "") configError(`${name} must be set`);
  return value;
}

const portText = required("GH_PORT");
const CLIENT_ID = required("GH_CLIENT_ID");
const CLIENT_SECRET = required("GH_CLIENT_SECRET");
const REDIRECT_URI = required("GH_REDIRECT_URI");

const PORT = Number(portText);
if (!/^\d+$/.test(portText) || PORT > 65535) {
  configError(`GH_PORT must be a port number (0 for any free port), got ${portText}`);
}
try {
  const u = new URL(REDIRECT_URI);
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("not http(s)");
  if (u.hash) throw new Error("has a fragment");
} catch (err) {
  configError(`GH_REDIRECT_URI must be an absolute http(s) URL without fragment: ${err.message}`);
}
let CODE_TTL_MS = 10 * 60 * 1000;
if (process.env.GH_CODE_TTL_SECONDS !== undefined && process.env.GH_CODE_TTL_SECONDS !== "") {
  const t = process.env.GH_CODE_TTL_SECONDS;
  if (!/^\d+$/.test(t) || Number(t) < 1) configError(`GH_CODE_TTL_SECONDS must be >= 1, got ${t}`);
  CODE_TTL_MS = Number(t) * 1000;
}

// ---------------------------------------------------------------- users

const DOCS = "https://docs.github.com";
const AUTHZ_ERRORS = `${DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors`;
const TOKEN_ERRORS = `${DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors`;

// emails: [address, primary, verified]
const USERS = {
  octocat: {
    login: "octocat", id: 583231, name: "The Octocat", email: null,
    created_at: "2011-01-25T18:44:36Z",
    emails: [["octocat@github.test", true, true], ["octo-old@github.test", false, true]],
  },
  ada: {
    login: "ada", id: 1001, name: "Ada Lovelace", email: "ada@acme.example.com",
    emails: [["ada@acme.example.com", true, true]],
  },
  unverified: {
    login: "unverified", id: 1002, name: "Nobody", email: null,
    emails: [["unverified@github.test", true, false]],
  },
  secondary: {
    login: "secondary", id: 1003, name: "Secondary Email", email: null,
    emails: [["primary-unverified@github.test", true, false], ["second@github.test", false, true]],
  },
};

// GitHub logins: alphanumerics and single hyphens, 1..39 characters, case-insensitive.
const LOGIN_RE = /^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$/;

function userFor(login) {
  const known = USERS[login.toLowerCase()];
  if (known) return known;
  const digest = createHash("sha256").update(login.toLowerCase()).digest();
  return {
    login, id: 10_000_000 + (digest.readUInt32BE(0) % 90_000_000), name: null, email: null,
    emails: [[`${login.toLowerCase()}@github.test`, true, true]],
  };
}

function userJson(user, base) {
  const api = `${base}/api/v3/users/${user.login}`;
  return {
    login: user.login,
    id: user.id,
    node_id: Buffer.from(`04:User${user.id}`).toString("base64"),
    avatar_url: `${base}/avatars/u/${user.id}?v=4`,
    gravatar_id: "",
    url: api,
    html_url: `${base}/${user.login}`,
    followers_url: `${api}/followers`,
    following_url: `${api}/following{/other_user}`,
    gists_url: `${api}/gists{/gist_id}`,
    starred_url: `${api}/starred{/owner}{/repo}`,
    subscriptions_url: `${api}/subscriptions`,
    organizations_url: `${api}/orgs`,
    repos_url: `${api}/repos`,
    events_url: `${api}/events{/privacy}`,
    received_events_url: `${api}/received_events`,
    type: "User",
    user_view_type: "private",
    site_admin: false,
    name: user.name,
    company: null,
    blog: "",
    location: null,
    email: user.email,
    hireable: null,
    bio: null,
    twitter_username: null,
    notification_email: user.email,
    public_repos: 0,
    public_gists: 0,
    followers: 0,
    following: 0,
    created_at: user.created_at ?? "2020-01-01T00:00:00Z",
    updated_at: "2024-01-01T00:00:00Z",
    private_gists: 0,
    total_private_repos: 0,
    owned_private_repos: 0,
    disk_usage: 0,
    collaborators: 0,
    two_factor_authentication: false,
    plan: { name: "free", space: 976562499, collaborators: 0, private_repos: 10000 },
  };
}

function emailsJson(user) {
  return user.emails.map(([email, primary, verified]) => ({
    email,
    primary,
    verified,
    // GitHub: the primary address is "public" or "private", the others have null visibility.
    visibility: primary ? (user.email === email ? "public" : "private") : null,
  }));
}

// ---------------------------------------------------------------- state

const codes = new Map(); // code -> {login, clientId, redirectUri, scopes, challenge, expires}
const tokens = new Map(); // token -> {login, clientId, scopes}

setInterval(() => {
  const now = Date.now();
  for (const [code, grant] of codes) if (grant.expires <= now) codes.delete(code);
}, 60_000).unref();

function parseScopes(text) {
  const seen = [];
  for (const s of (text ?? "").split(/[\s,]+/)) if (s && !seen.includes(s)) seen.push(s);
  return seen;
}

const BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
function newToken() {
  let out = "gho_";
  for (const b of randomBytes(36)) out += BASE62[b % 62];
  return out;
}

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && timingSafeEqual(x, y);
}

// ---------------------------------------------------------------- http helpers

function send(res, status, body, type, headers = {}) {
  const buf = Buffer.from(body);
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": buf.length,
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(buf);
}

function sendJson(res, status, value, headers = {}) {
  send(res, status, JSON.stringify(value), "application/json; charset=utf-8", headers);
}

function redirect(res, location) {
  res.writeHead(302, { Location: location, "Content-Length": 0, "Cache-Control": "no-store" });
  res.end();
}

function withParams(uri, params) {
  const u = new URL(uri);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.searchParams.append(k, v);
  return u.toString();
}

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > limit) {
        reject(Object.assign(new Error("body too large"), { status: 413 }));
        req.destroy();
      } else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

// ---------------------------------------------------------------- web flow

function authorize(req, res, url) {
  const q = url.searchParams;
  const clientId = q.get("client_id");
  const state = q.get("state") ?? undefined;
  if (!clientId || clientId !== CLIENT_ID) {
    send(res, 404, "Not Found\n", "text/plain; charset=utf-8");
    return;
  }
  const redirectUri = q.get("redirect_uri") || REDIRECT_URI;
  if (redirectUri !== REDIRECT_URI) {
    redirect(res, withParams(REDIRECT_URI, {
      error: "redirect_uri_mismatch",
      error_description: "The redirect_uri MUST match the registered callback URL for this application.",
      error_uri: `${AUTHZ_ERRORS}/#redirect-uri-mismatch`,
      state,
    }));
    return;
  }
  const challenge = q.get("code_challenge");
  const method = q.get("code_challenge_method");
  if ((challenge || method) && (method !== "S256" || !/^[A-Za-z0-9_-]{43}$/.test(challenge ?? ""))) {
    redirect(res, withParams(redirectUri, {
      error: "invalid_request",
      error_description: "Only the S256 code_challenge_method is supported, with a valid code_challenge.",
      state,
    }));
    return;
  }
  const login = q.get("login") || "octocat";
  if (login === "denied") {
    redirect(res, withParams(redirectUri, {
      error: "access_denied",
      error_description: "The user has denied your application access.",
      error_uri: `${AUTHZ_ERRORS}/#access-denied`,
      state,
    }));
    return;
  }
  if (!LOGIN_RE.test(login)) {
    send(res, 422, `Not a GitHub login: ${login}\n`, "text/plain; charset=utf-8");
    return;
  }
  const user = userFor(login);
  const code = randomBytes(10).toString("hex");
  codes.set(code, {
    login: user.login,
    clientId,
    redirectUri,
    scopes: parseScopes(q.get("scope")),
    challenge: challenge || null,
    expires: Date.now() + CODE_TTL_MS,
  });
  log(`authorize: code for ${user.login}, scope "${q.get("scope") ?? ""}"`);
  redirect(res, withParams(redirectUri, { code, state }));
}

function parseParams(req, url, body) {
  const params = new URLSearchParams(url.search);
  const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/json") {
    let obj;
    try {
      obj = JSON.parse(body || "{}");
    } catch {
      return null;
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return null;
    for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined) params.set(k, String(v));
  } else {
    for (const [k, v] of new URLSearchParams(body)) params.set(k, v);
  }
  return params;
}

function basicCredentials(req) {
  const m = /^basic\s+([A-Za-z0-9+/=._~-]+)\s*$/i.exec(req.headers.authorization ?? "");
  if (!m) return null;
  const text = Buffer.from(m[1], "base64").toString("utf8");
  const i = text.indexOf(":");
  if (i < 0) return null;
  const dec = (s) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, " "));
    } catch {
      return s;
    }
  };
  return { id: dec(text.slice(0, i)), secret: dec(text.slice(i + 1)) };
}

async function accessToken(req, res, url) {
  const wantsJson = /application\/json/i.test(req.headers.accept ?? "");
  const reply = (obj) => {
    if (wantsJson) sendJson(res, 200, obj);
    else send(res, 200, new URLSearchParams(obj).toString(), "application/x-www-form-urlencoded; charset=utf-8");
  };
  const error = (error, error_description, error_uri) => {
    log(`access_token: ${error}`);
    reply({ error, error_description, error_uri });
  };

  const params = parseParams(req, url, await readBody(req));
  if (params === null) {
    sendJson(res, 400, { message: "Problems parsing JSON" });
    return;
  }
  const basic = basicCredentials(req);
  const clientId = basic?.id ?? params.get("client_id") ?? "";
  const clientSecret = basic?.secret ?? params.get("client_secret") ?? "";
  if (!safeEqual(clientId, CLIENT_ID) || !safeEqual(clientSecret, CLIENT_SECRET)) {
    error("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.",
      `${TOKEN_ERRORS}/#incorrect-client-credentials`);
    return;
  }
  const badCode = () => error("bad_verification_code", "The code passed is incorrect or expired.",
    `${TOKEN_ERRORS}/#bad-verification-code`);
  const code = params.get("code") ?? "";
  const grant = codes.get(code);
  if (!grant || grant.expires <= Date.now() || grant.clientId !== clientId) {
    if (grant && grant.expires <= Date.now()) codes.delete(code);
    badCode();
    return;
  }
  const redirectUri = params.get("redirect_uri");
  if (redirectUri && redirectUri !== grant.redirectUri) {
    error("redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.",
      `${AUTHZ_ERRORS}/#redirect-uri-mismatch2`);
    return;
  }
  if (grant.challenge) {
    const verifier = params.get("code_verifier") ?? "";
    const computed = createHash("sha256").update(verifier).digest("base64url");
    if (!verifier || !safeEqual(computed, grant.challenge)) {
      badCode();
      return;
    }
  }
  codes.delete(code);
  const token = newToken();
  tokens.set(token, { login: grant.login, clientId, scopes: grant.scopes });
  log(`access_token: token for ${grant.login}, scopes [${grant.scopes.join(",")}]`);
  reply({ access_token: token, token_type: "bearer", scope: grant.scopes.join(",") });
}

// ---------------------------------------------------------------- REST API

function api(req, res, url, base) {
  const path = url.pathname.replace(/\/+$/, "");
  const ua = req.headers["user-agent"];
  if (!ua || !ua.trim()) {
    send(res, 403,
      "Request forbidden by administrative rules. Please make sure your request has a User-Agent header " +
      "(https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). " +
      "Check https://developer.github.com for other possible causes.\n",
      "text/plain; charset=utf-8");
    return;
  }
  const common = { "X-GitHub-Media-Type": "github.v3; format=json" };
  const notFound = (documentation_url = `${DOCS}/rest`, extra = {}) =>
    sendJson(res, 404, { message: "Not Found", documentation_url, status: "404" }, { ...common, ...extra });

  const routes = {
    "/api/v3/user": {
      doc: `${DOCS}/rest/users/users#get-the-authenticated-user`,
      accepted: "",
    },
    "/api/v3/user/emails": {
      doc: `${DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user`,
      accepted: "user, user:email",
    },
  };
  const route = routes[path];
  if (!route || (req.method !== "GET" && req.method !== "HEAD")) {
    notFound();
    return;
  }

  const auth = req.headers.authorization;
  if (!auth) {
    sendJson(res, 401, { message: "Requires authentication", documentation_url: route.doc, status: "401" }, common);
    return;
  }
  const m = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(auth);
  const grant = m ? tokens.get(m[1]) : undefined;
  if (!grant) {
    sendJson(res, 401, { message: "Bad credentials", documentation_url: `${DOCS}/rest`, status: "401" }, common);
    return;
  }
  const headers = {
    ...common,
    "X-OAuth-Scopes": grant.scopes.join(", "),
    "X-Accepted-OAuth-Scopes": route.accepted,
    "X-OAuth-Client-Id": grant.clientId,
  };
  const user = userFor(grant.login);
  if (path === "/api/v3/user") {
    sendJson(res, 200, userJson(user, base), headers);
    return;
  }
  if (!grant.scopes.includes("user:email") && !grant.scopes.includes("user")) {
    notFound(route.doc, headers);
    return;
  }
  sendJson(res, 200, emailsJson(user), headers);
}

// ---------------------------------------------------------------- server

let BASE = "";

async function handle(req, res) {
  const url = new URL(req.url, BASE);
  log(`${req.method} ${url.pathname}`);
  if (url.pathname === "/login/oauth/authorize" && req.method === "GET") return authorize(req, res, url);
  if (url.pathname === "/login/oauth/access_token" && req.method === "POST") return accessToken(req, res, url);
  if (url.pathname === "/api/v3" || url.pathname.startsWith("/api/v3/")) return api(req, res, url, BASE);
  send(res, 404, "Not Found\n", "text/plain; charset=utf-8");
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    log(`error: ${err?.stack ?? err}`);
    if (!res.headersSent) send(res, err?.status ?? 500, `${err?.status === 413 ? "Payload Too Large" : "Internal Server Error"}\n`, "text/plain; charset=utf-8");
    else res.destroy();
  });
});

await new Promise((resolve, reject) => {
  server.once("error", (err) => {
    log(`cannot listen on 127.0.0.1:${PORT}: ${err.message}`);
    reject(err);
  });
  server.listen(PORT, "127.0.0.1", resolve);
}).catch(() => process.exit(1));

BASE = `http://localhost:${server.address().port}`;

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

process.stdout.write(`READY ${BASE}\n`);
