// Drives the official kurento-client (npm, strict mode) from a test over stdin/stdout.
// Each stdin line is a JSON command {"id", "op", ...}; each stdout line a JSON reply
// {"id", "ok", "value"} or {"id", "ok": false, "error"}, or an event {"event", "ref", "data"}.
// Objects are referred to by the names the test gives them ("ref").
'use strict';

const readline = require('readline');
// kurento-client's Transaction calls Node's domain.Domain without `new`; Domain is an ES class
// in current Node, so beginTransaction() would throw "Class constructor Domain cannot be invoked
// without 'new'". Loaded with domain.Domain hidden, the client uses its own fallback (FakeDomain,
// its browser path). See docs/mediaserver.md, "Kurento's own test suite".
const domain = require('domain');
const RealDomain = domain.Domain;
domain.Domain = undefined;
const kurentoClient = require('kurento-client');
domain.Domain = RealDomain;

const objects = {};
let client = null;
let rawClient = null; // the KurentoClient itself: the resolved value hides non-enumerable sessionId

function out(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

// Media objects become their ids; complex values (ElementConnectionData...) plain JSON.
function toJson(value) {
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === 'object') {
    if (typeof value.id === 'string' && typeof value.release === 'function') return value.id;
    const plain = {};
    for (const key of Object.keys(value)) plain[key] = toJson(value[key]);
    return plain;
  }
  return value;
}

const ops = {
  async connect({url}) {
    rawClient = kurentoClient(url, {strict: true, failAfter: 100});
    client = await rawClient;
    client.on('disconnect', () => out({event: 'client-disconnect'}));
    client.on('reconnected', (sameSession) => out({event: 'reconnected', data: sameSession}));
    return rawClient.sessionId || null;
  },
  async create({ref, type, parent, params}) {
    const factory = parent ? objects[parent] : client;
    objects[ref] = await factory.create(type, params || {});
    return objects[ref].id;
  },
  async byId({ref, objectId}) {
    objects[ref] = await client.getMediaobjectById(objectId);
    return objects[ref].id;
  },
  async on({ref, event}) {
    objects[ref].on(event, (data) => out({event, ref, data}));
    return null;
  },
  async call({ref, method, args}) {
    const resolved = (args || []).map((arg) =>
      arg && typeof arg === 'object' && arg.$ref ? objects[arg.$ref] : arg);
    return toJson(await objects[ref][method](...resolved));
  },
  async addIceCandidate({ref, candidate}) {
    const complex = kurentoClient.getComplexType('IceCandidate')(candidate);
    await objects[ref].addIceCandidate(complex);
    return null;
  },
  // One explicit transaction (beginTransaction/commit): steps are {create: ref, type, parent}
  // or {call: ref, method, args}; answers each step's outcome after the commit.
  async transaction({steps}) {
    const tx = client.beginTransaction();
    const outcomes = steps.map((step) => {
      if (step.create) {
        const factory = step.parent ? objects[step.parent] : client;
        objects[step.create] = factory.create(tx, step.type, step.params || {});
        return Promise.resolve(objects[step.create]).then(
          (created) => ({ok: true, value: created.id}), (error) => ({ok: false, code: error.code}));
      }
      const args = (step.args || []).map((arg) =>
        arg && typeof arg === 'object' && arg.$ref ? objects[arg.$ref] : arg);
      // With a transaction first, the generated methods need the callback passed explicitly:
      // they shift the transaction off `arguments`, which leaves `callback` at the last value.
      return new Promise((resolve) => objects[step.call][step.method](tx, ...args,
        (error, value) => resolve(error ? {ok: false, code: error.code} : {ok: true, value: toJson(value)})));
    });
    await tx.commit();
    return {commited: tx.commited, steps: await Promise.all(outcomes)};
  },
  async serverInfo() {
    const manager = await client.getServerManager();
    const info = await manager.getInfo();
    const pipelines = await manager.getPipelines();
    return {modules: info.modules.map((m) => m.name), pipelines: pipelines.map((p) => p.id)};
  },
  async release({ref}) {
    await objects[ref].release();
    delete objects[ref];
    return null;
  },
  async sessionId() {
    return rawClient.sessionId;
  },
  async close() {
    client.close();
    setTimeout(() => process.exit(0), 100);
    return null;
  },
};

readline.createInterface({input: process.stdin}).on('line', async (line) => {
  const command = JSON.parse(line);
  try {
    const value = await ops[command.op](command);
    out({id: command.id, ok: true, value});
  } catch (error) {
    out({id: command.id, ok: false, error: String(error && error.message || error),
      code: error && error.code, name: error && error.name});
  }
});
