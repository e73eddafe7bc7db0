// Verifies an X-Nini-Identity token the way an upstream would: the `jose` library (not our
// code) fetches the sidecar's JWKS and checks signature, algorithm, issuer, audience and times.
//   node verify.mjs <jwks URL> <token> <issuer> <audience>
// Prints the verified payload as one JSON line and exits 0; on any failure prints the reason
// on stderr and exits 1 (2 for bad usage). Driven by tests/e2e/identity_jwt.rs.
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUrl, token, issuer, audience] = process.argv.slice(2);
if (!jwksUrl || !token || !issuer || !audience) {
  console.error("usage: node verify.mjs <jwks URL> <token> <issuer> <audience>");
  process.exit(2);
}

try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 5000 });
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    // Only what the sidecar signs with: a token claiming another algorithm is refused.
    algorithms: ["EdDSA"],
    requiredClaims: ["sub", "iat", "nbf", "exp"],
    // Same small allowance docs/upstream.md recommends for clocks that drift apart.
    clockTolerance: 5,
  });
  console.log(JSON.stringify(payload));
} catch (e) {
  console.error(`verification failed: ${e?.code ?? "error"}: ${e?.message ?? e}`);
  process.exit(1);
}
