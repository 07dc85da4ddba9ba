// The npm oidc-provider (a certified OpenID provider) configured for client credentials with
// JWT access tokens signed as Gatehouse signs them (RS256, ES256 or EdDSA): the comparison of
// benches/oidc_load.py. Node runs one thread; with WORKERS > 1 the primary forks WORKERS
// processes (the Node cluster module) that share one key, so that it can use every core.
//
//     npm ci --prefix benches/oidc-provider && node benches/oidc-provider/server.mjs 3000 1 RS256
import cluster from "node:cluster";
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.argv[2] || 3000);
const workers = Number(process.argv[3] || 1);
const alg = process.argv[4] || "RS256";

function generate() {
  const pair = {
    RS256: () => generateKeyPairSync("rsa", { modulusLength: 2048 }),
    ES256: () => generateKeyPairSync("ec", { namedCurve: "P-256" }),
    EdDSA: () => generateKeyPairSync("ed25519"),
  }[alg];
  if (!pair) throw new Error(`unsupported algorithm ${alg}`);
  return pair().privateKey.export({ format: "jwk" });
}

if (cluster.isPrimary && workers > 1) {
  // One signing key for all workers.
  const jwk = generate();
  for (let i = 0; i < workers; i++) cluster.fork({ BENCH_JWK: JSON.stringify(jwk) });
} else {
  const jwk = process.env.BENCH_JWK ? JSON.parse(process.env.BENCH_JWK) : generate();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: "bench",
      client_secret: "bench-secret-bench-secret-bench-secret",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: "client_secret_basic",
      // The provider has one key, of `alg`; the client's default (RS256) would need another.
      id_token_signed_response_alg: alg,
    }],
    jwks: { keys: [{ ...jwk, kid: "bench", alg, use: "sig" }] },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => issuer,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: "", accessTokenFormat: "jwt", jwt: { sign: { alg } } }),
      },
    },
  });
  provider.listen(port, "127.0.0.1");
}
