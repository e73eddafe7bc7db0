// Prisma CLI config for the offline check (Prisma 6.19.x).
// `engine: "js"` + a driver adapter makes `prisma migrate diff` / `prisma db pull`
// run the schema engine shipped as WebAssembly inside the `prisma` npm package,
// so no native engine is downloaded. Callers must also set
// PRISMA_CLIENT_ENGINE_TYPE=client (pull-check.mjs does), or the CLI tries to
// download the query-engine library first.
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";

// @prisma/adapter-pg 6.19.x cannot map PostgreSQL's system types `name` (oid 19)
// and `"char"` (oid 18), which the schema engine's introspection queries return
// (e.g. pg_namespace.nspname): `db pull` then fails with
// "Column type 'name' could not be deserialized from the database".
// Report such columns as `text` (oid 25); their text values are identical.
const SYSTEM_TEXT_OIDS = new Set([18, 19]);
let patched = false;
function reportSystemTextAsText(adapter) {
  if (patched) return;
  let proto = Object.getPrototypeOf(adapter);
  while (proto && !Object.hasOwn(proto, "performIO")) proto = Object.getPrototypeOf(proto);
  if (!proto) throw new Error("@prisma/adapter-pg internals changed: no performIO to patch");
  const performIO = proto.performIO;
  proto.performIO = async function (query) {
    const res = await performIO.call(this, query);
    for (const f of res.fields ?? []) if (SYSTEM_TEXT_OIDS.has(f.dataTypeID)) f.dataTypeID = 25;
    return res;
  };
  patched = true;
}

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: "schema.prisma",
  async adapter() {
    if (!process.env.DATABASE_URL) throw new Error("DATABASE_URL is not set");
    // allowExitOnIdle: otherwise pg's pool keeps the CLI alive for its 10 s idle timeout.
    const factory = new PrismaPg({ connectionString: process.env.DATABASE_URL, allowExitOnIdle: true });
    const connect = factory.connect.bind(factory);
    factory.connect = async () => {
      const adapter = await connect();
      reportSystemTextAsText(adapter);
      return adapter;
    };
    return factory;
  },
});
