// Drives a running Gatehouse through OpenFGA's JavaScript SDK, unchanged, and fails on the
// first answer that differs from what OpenFGA would give.
//
//   FGA_API_URL=http://127.0.0.1:8080 FGA_API_KEY=... node sdk.mjs
//
// Exits 0 when every step matched; otherwise prints what differed and exits 1.

import { CredentialsMethod, OpenFgaClient } from "@openfga/sdk";

const apiUrl = process.env.FGA_API_URL;
const apiKey = process.env.FGA_API_KEY;
if (!apiUrl || !apiKey) {
  console.error("FGA_API_URL and FGA_API_KEY must be set");
  process.exit(2);
}

const failures = [];
let steps = 0;

// JSON with object keys sorted, so that key order does not count as a difference.
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "undefined";
}

function expect(what, got, want) {
  steps += 1;
  const g = canonical(got);
  const w = canonical(want);
  if (g !== w) {
    failures.push(`${what}: got ${g}, want ${w}`);
  }
}

const sorted = (xs) => [...xs].sort();

const config = {
  apiUrl,
  credentials: { method: CredentialsMethod.ApiToken, config: { token: apiKey } },
  retryParams: { maxRetry: 0 },
};

// The model: direct, computed, `from`, usersets, wildcard, a condition.
const model = {
  schema_version: "1.1",
  type_definitions: [
    { type: "user" },
    {
      type: "group",
      relations: { member: { this: {} } },
      metadata: { relations: { member: { directly_related_user_types: [{ type: "user" }] } } },
    },
    {
      type: "folder",
      relations: { viewer: { this: {} } },
      metadata: { relations: { viewer: { directly_related_user_types: [{ type: "user" }] } } },
    },
    {
      type: "document",
      relations: {
        parent: { this: {} },
        owner: { this: {} },
        viewer: {
          union: {
            child: [
              { this: {} },
              { computedUserset: { object: "", relation: "owner" } },
              {
                tupleToUserset: {
                  tupleset: { object: "", relation: "parent" },
                  computedUserset: { object: "", relation: "viewer" },
                },
              },
            ],
          },
        },
        spender: { this: {} },
      },
      metadata: {
        relations: {
          parent: { directly_related_user_types: [{ type: "folder" }] },
          owner: { directly_related_user_types: [{ type: "user" }] },
          viewer: {
            directly_related_user_types: [
              { type: "user" },
              { type: "user", wildcard: {} },
              { type: "group", relation: "member" },
            ],
          },
          spender: { directly_related_user_types: [{ type: "user", condition: "within_limit" }] },
        },
      },
    },
  ],
  conditions: {
    within_limit: {
      name: "within_limit",
      expression: "amount <= limit",
      parameters: {
        amount: { type_name: "TYPE_NAME_INT" },
        limit: { type_name: "TYPE_NAME_INT" },
      },
    },
  },
};

async function main() {
  const admin = new OpenFgaClient(config);
  const store = await admin.createStore({ name: "sdk-compat" });
  expect("createStore name", store.name, "sdk-compat");
  if (!/^[0-9A-HJKMNP-TV-Z]{26}$/.test(store.id ?? "")) {
    throw new Error(`createStore returned a store id that is not a ULID: ${JSON.stringify(store)}`);
  }

  const fga = new OpenFgaClient({ ...config, storeId: store.id });
  const got = await fga.getStore();
  expect("getStore id", got.id, store.id);

  const { authorization_model_id: modelId } = await fga.writeAuthorizationModel(model);
  if (!modelId) throw new Error("writeAuthorizationModel returned no id");
  fga.authorizationModelId = modelId;
  const read = await fga.readAuthorizationModel();
  expect("readAuthorizationModel id", read.authorization_model?.id, modelId);
  const latest = await fga.readLatestAuthorizationModel();
  expect("readLatestAuthorizationModel id", latest.authorization_model?.id, modelId);

  await fga.write({
    writes: [
      { user: "user:anne", relation: "owner", object: "document:1" },
      { user: "folder:a", relation: "parent", object: "document:1" },
      { user: "user:carol", relation: "viewer", object: "folder:a" },
      { user: "user:dave", relation: "member", object: "group:eng" },
      { user: "group:eng#member", relation: "viewer", object: "document:2" },
      { user: "user:*", relation: "viewer", object: "document:public" },
      {
        user: "user:erin",
        relation: "spender",
        object: "document:1",
        condition: { name: "within_limit", context: { limit: 100 } },
      },
    ],
  });
  await fga.writeTuples([{ user: "user:bob", relation: "viewer", object: "document:3" }]);
  await fga.deleteTuples([{ user: "user:bob", relation: "viewer", object: "document:3" }]);

  const check = async (user, relation, object, extra = {}) =>
    (await fga.check({ user, relation, object, ...extra })).allowed;
  expect("check owner -> viewer", await check("user:anne", "viewer", "document:1"), true);
  expect("check viewer from parent", await check("user:carol", "viewer", "document:1"), true);
  expect("check userset", await check("user:dave", "viewer", "document:2"), true);
  expect("check wildcard", await check("user:zoe", "viewer", "document:public"), true);
  expect("check denied", await check("user:zoe", "viewer", "document:1"), false);
  expect("check deleted tuple", await check("user:bob", "viewer", "document:3"), false);
  expect("check condition true", await check("user:erin", "spender", "document:1", { context: { amount: 50 } }), true);
  expect("check condition false", await check("user:erin", "spender", "document:1", { context: { amount: 500 } }), false);
  expect(
    "check contextual tuple",
    await check("user:zoe", "viewer", "document:9", {
      contextualTuples: [{ user: "user:zoe", relation: "owner", object: "document:9" }],
    }),
    true,
  );
  let missingParamsRejected = false;
  try {
    await check("user:erin", "spender", "document:1");
  } catch (e) {
    missingParamsRejected = e?.statusCode === 400;
  }
  expect("check condition without its parameters is a 400", missingParamsRejected, true);

  const batch = await fga.batchCheck({
    checks: [
      { user: "user:anne", relation: "viewer", object: "document:1", correlationId: "anne-1" },
      { user: "user:zoe", relation: "viewer", object: "document:1", correlationId: "zoe-1" },
      { user: "user:dave", relation: "viewer", object: "document:2", correlationId: "dave-2" },
      { user: "user:erin", relation: "spender", object: "document:1", context: { amount: 7 }, correlationId: "erin-1" },
    ],
  });
  const byId = Object.fromEntries(batch.result.map((r) => [r.correlationId, r.allowed]));
  expect("batchCheck", byId, { "anne-1": true, "dave-2": true, "erin-1": true, "zoe-1": false });

  const objects = await fga.listObjects({ user: "user:anne", relation: "viewer", type: "document" });
  expect("listObjects anne", sorted(objects.objects), ["document:1", "document:public"]);
  const carolObjects = await fga.listObjects({ user: "user:carol", relation: "viewer", type: "document" });
  expect("listObjects carol", sorted(carolObjects.objects), ["document:1", "document:public"]);

  const users = await fga.listUsers({
    object: { type: "document", id: "1" },
    relation: "viewer",
    user_filters: [{ type: "user" }],
  });
  const names = sorted(users.users.map((u) => (u.object ? `${u.object.type}:${u.object.id}` : JSON.stringify(u))));
  expect("listUsers document:1 viewer", names, ["user:anne", "user:carol"]);
  const publicUsers = await fga.listUsers({
    object: { type: "document", id: "public" },
    relation: "viewer",
    user_filters: [{ type: "user" }],
  });
  expect("listUsers wildcard", publicUsers.users, [{ wildcard: { type: "user" } }]);
  const groupUsers = await fga.listUsers({
    object: { type: "document", id: "2" },
    relation: "viewer",
    user_filters: [{ type: "group", relation: "member" }],
  });
  expect("listUsers userset", groupUsers.users, [{ userset: { type: "group", id: "eng", relation: "member" } }]);

  const tuples = await fga.read({ object: "document:1" });
  const keys = sorted(tuples.tuples.map((t) => `${t.key.object}#${t.key.relation}@${t.key.user}`));
  expect("read document:1", keys, [
    "document:1#owner@user:anne",
    "document:1#parent@folder:a",
    "document:1#spender@user:erin",
  ]);
  const erin = tuples.tuples.find((t) => t.key.user === "user:erin");
  expect("read keeps the condition", erin?.key?.condition?.name, "within_limit");

  const allChanges = [];
  let token;
  for (let i = 0; i < 20; i += 1) {
    const page = await fga.readChanges({ type: "document" }, { pageSize: 3, continuationToken: token });
    allChanges.push(...page.changes);
    if (page.changes.length === 0 || !page.continuation_token) break;
    token = page.continuation_token;
  }
  const ops = allChanges.map((c) => `${c.operation} ${c.tuple_key.object}#${c.tuple_key.relation}@${c.tuple_key.user}`);
  expect("readChanges document", sorted(ops), sorted([
    "TUPLE_OPERATION_WRITE document:1#owner@user:anne",
    "TUPLE_OPERATION_WRITE document:1#parent@folder:a",
    "TUPLE_OPERATION_WRITE document:2#viewer@group:eng#member",
    "TUPLE_OPERATION_WRITE document:public#viewer@user:*",
    "TUPLE_OPERATION_WRITE document:1#spender@user:erin",
    "TUPLE_OPERATION_WRITE document:3#viewer@user:bob",
    "TUPLE_OPERATION_DELETE document:3#viewer@user:bob",
  ]));
  expect("readChanges count", allChanges.length, 7);
  expect(
    "readChanges ends with the delete",
    ops[ops.length - 1],
    "TUPLE_OPERATION_DELETE document:3#viewer@user:bob",
  );

  const expanded = await fga.expand({ relation: "viewer", object: "document:2" });
  const root = expanded.tree?.root;
  expect("expand root name", root?.name, "document:2#viewer");
  const children = root?.union?.nodes ?? [];
  expect("expand union arity", children.length, 3);
  expect("expand direct users", children[0]?.leaf?.users?.users, ["group:eng#member"]);

  await fga.writeAssertions([{ user: "user:anne", relation: "viewer", object: "document:1", expectation: true }]);
  const assertions = await fga.readAssertions();
  expect("readAssertions", assertions.assertions?.length, 1);

  const stores = await admin.listStores();
  expect("listStores has the store", stores.stores.some((s) => s.id === store.id), true);
  await fga.deleteStore();
  let gone = false;
  try {
    await fga.getStore();
  } catch (e) {
    gone = e?.statusCode === 404;
  }
  expect("getStore after delete is a 404", gone, true);
}

try {
  await main();
} catch (e) {
  const detail = e?.responseData ? ` ${JSON.stringify(e.responseData)}` : "";
  console.error(`sdk run failed: ${e?.stack ?? e}${detail}`);
  process.exit(1);
}
if (failures.length > 0) {
  console.error(`${failures.length} of ${steps} SDK steps did not match:`);
  for (const f of failures) console.error(`  - ${f}`);
  process.exit(1);
}
console.log(`sdk: all ${steps} steps matched`);
