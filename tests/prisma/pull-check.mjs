#!/usr/bin/env node
// Checks that `prisma db pull` on DATABASE_URL yields the NINI app's User and
// Session models exactly as written in schema.prisma beside this file.
//
//   DATABASE_URL=postgresql://... node pull-check.mjs [--strict] [--out FILE]
//   DATABASE_URL=postgresql://... node pull-check.mjs --ddl   # print Prisma's DDL
//
// `db pull --print` runs in re-introspection mode on schema.prisma, so names
// that the database cannot carry (camelCase field names with @map, @@map,
// @default(cuid()), @updatedAt, relation field names, doc comments) come from
// schema.prisma, while everything else (columns, nullability, types incl.
// @db.*, defaults, primary/unique keys, foreign keys with their actions) comes
// from the database. A missing, extra or different column, key or action shows
// up as a difference.
//
// Back-relation fields that our own `nini_auth_*` tables add to User (when
// they have a foreign key to users) are allowed and listed, unless --strict.
// Exit 0: match; 1: mismatch; 2: usage or Prisma/database error.

import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const strict = argv.includes("--strict");
const ddl = argv.includes("--ddl");
const outIdx = argv.indexOf("--out");
const outFile = outIdx >= 0 ? argv[outIdx + 1] : undefined;
const CHECKED = ["User", "Session"];
const OWN_MODEL_PREFIX = "nini_auth_";

function die(code, msg) {
  console.error(`pull-check: ${msg}`);
  process.exit(code);
}

if (!process.env.DATABASE_URL) die(2, "DATABASE_URL is not set");

function prisma(args) {
  const res = spawnSync(
    process.execPath,
    [join(here, "node_modules", "prisma", "build", "index.js"), ...args, "--config", join(here, "prisma.config.mjs")],
    {
      cwd: here,
      encoding: "utf8",
      timeout: 120_000,
      env: {
        ...process.env,
        PRISMA_CLIENT_ENGINE_TYPE: "client", // no query-engine download
        PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING: "1",
        PRISMA_HIDE_UPDATE_MESSAGE: "1",
        CHECKPOINT_DISABLE: "1", // no telemetry/update check
        NO_COLOR: "1",
      },
    },
  );
  if (res.error) die(2, `running prisma ${args.join(" ")}: ${res.error.message}`);
  if (/binaries\.prisma\.sh/.test(res.stderr + res.stdout))
    die(2, `prisma tried to download an engine (offline setup broken):\n${res.stderr}`);
  if (res.status !== 0) die(2, `prisma ${args.join(" ")} exited ${res.status}:\n${res.stderr}${res.stdout}`);
  return res.stdout;
}

if (ddl) {
  process.stdout.write(prisma(["migrate", "diff", "--from-empty", "--to-schema-datamodel", "schema.prisma", "--script"]));
  process.exit(0);
}

// --- a small parser for Prisma's printed models -------------------------------

// Split "@unique @map("x") @default(now())" into top-level attributes.
function splitAttrs(s) {
  const out = [];
  let depth = 0, quoted = false, cur = "";
  for (const ch of s) {
    if (quoted) { cur += ch; if (ch === '"') quoted = false; continue; }
    if (ch === '"') quoted = true;
    else if (ch === "(" || ch === "[") depth++;
    else if (ch === ")" || ch === "]") depth--;
    if (ch === "@" && depth === 0 && cur.trim() && !cur.endsWith("@")) { out.push(cur.trim()); cur = ""; }
    cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out.map((a) => a.replace(/\s+/g, " ").replace(/\s*([(),:\[\]])\s*/g, "$1").replace(/,/g, ", ")).sort();
}

function parseModels(text) {
  const models = new Map();
  let cur = null;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\/\/.*$/, "").trim(); // drops // and /// comments (no "//" in our strings)
    if (!cur) {
      const m = /^model\s+(\w+)\s*\{$/.exec(line);
      if (m) { cur = { name: m[1], fields: new Map(), block: [] }; models.set(m[1], cur); }
      continue;
    }
    if (line === "}") { cur = null; continue; }
    if (!line) continue;
    if (line.startsWith("@@")) { cur.block.push(...splitAttrs(line)); continue; }
    const m = /^(\w+)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (!m) die(2, `cannot parse line in model ${cur.name}: ${raw}`);
    cur.fields.set(m[1], { type: m[2], attrs: splitAttrs(m[3] ?? "") });
  }
  for (const m of models.values()) m.block.sort();
  return models;
}

const fieldStr = (name, f) => `${name} ${f.type} ${f.attrs.join(" ")}`.trim();

// --- compare ------------------------------------------------------------------

const intended = parseModels(readFileSync(join(here, "schema.prisma"), "utf8"));
const printed = prisma(["db", "pull", "--print"]);
if (outFile) writeFileSync(outFile, printed);
const pulled = parseModels(printed);

const problems = [];
const notes = [];
for (const name of CHECKED) {
  const want = intended.get(name);
  if (!want) die(2, `schema.prisma has no model ${name}`);
  const got = pulled.get(name);
  if (!got) { problems.push(`model ${name}: missing from db pull output`); continue; }
  for (const [fname, wf] of want.fields) {
    const gf = got.fields.get(fname);
    if (!gf) problems.push(`model ${name}: field missing: ${fieldStr(fname, wf)}`);
    else if (fieldStr(fname, wf) !== fieldStr(fname, gf))
      problems.push(`model ${name}: field differs:\n    want: ${fieldStr(fname, wf)}\n    got:  ${fieldStr(fname, gf)}`);
  }
  for (const [fname, gf] of got.fields) {
    if (want.fields.has(fname)) continue;
    const target = gf.type.replace(/[?\[\]]/g, "");
    const ownBackRelation = target.startsWith(OWN_MODEL_PREFIX) && pulled.has(target);
    if (ownBackRelation && !strict) notes.push(`model ${name}: back-relation from our own table: ${fieldStr(fname, gf)}`);
    else problems.push(`model ${name}: extra field: ${fieldStr(fname, gf)}`);
  }
  const wb = want.block.join(" "), gb = got.block.join(" ");
  if (wb !== gb) problems.push(`model ${name}: block attributes differ:\n    want: ${wb}\n    got:  ${gb}`);
}

for (const n of notes) console.log(`note: ${n}`);
const others = [...pulled.keys()].filter((m) => !CHECKED.includes(m));
if (others.length) console.log(`note: other models in the database: ${others.join(", ")}`);
if (problems.length) {
  for (const p of problems) console.log(`FAIL ${p}`);
  console.log(`pull-check: ${problems.length} difference(s) between db pull and schema.prisma`);
  process.exit(1);
}
console.log(`pull-check: ok (${CHECKED.join(", ")} match schema.prisma)`);
