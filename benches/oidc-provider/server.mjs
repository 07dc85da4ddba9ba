// The npm oidc-provider (a certified OpenID provider) configured for client credentials with
// JWT access tokens signed RS256, as Gatehouse issues them: the comparison of
// benches/oidc_load.py. Node runs one thread; `node server.mjs PORT WORKERS` forks WORKERS
// processes (the Node cluster module) so that it can use every core, as Gatehouse does.
//
//     npm ci --prefix benches/oidc-provider && node benches/oidc-provider/server.mjs 3000 2
import cluster from "node:cluster";
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.argv[2] || 3000);
const workers = Number(process.argv[3] || 1);

if (cluster.isPrimary && workers > 1) {
  // One signing key for all workers.
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = privateKey.export({ format: "jwk" });
  for (let i = 0; i < workers; i++) cluster.fork({ BENCH_JWK: JSON.stringify(jwk) });
} else {
  const jwk = process.env.BENCH_JWK
    ? JSON.parse(process.env.BENCH_JWK)
    : generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: "bench",
      client_secret: "bench-secret-bench-secret-bench-secret",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: "client_secret_basic",
    }],
    jwks: { keys: [{ ...jwk, kid: "bench", alg: "RS256", use: "sig" }] },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => issuer,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: "", accessTokenFormat: "jwt", jwt: { sign: { alg: "RS256" } } }),
      },
    },
  });
  provider.listen(port, "127.0.0.1");
}
