#!/usr/bin/env node
// Runs Kurento's own kurento-client QUnit suites (clients/javascript/client/test in a checkout
// of github.com/Kurento/kurento, never copied into this repository) against any Kurento-protocol
// server. It stands in for the KurentoForks/qunit-cli fork their scripts use (a git dependency):
// sets QUnit.config from --ws_uri/--prefix/--timeout_factor, loads directories, and writes
// per-test results as JSON. See docs/mediaserver.md, "Kurento's own test suite".
'use strict';
const fs = require('fs');
const path = require('path');
const argv = require('minimist')(process.argv.slice(2));

const QUnitCli = require('qunit-cli'); // console reporter; must load before the QUnit global
global.QUnit = QUnitCli;
Object.assign(global, QUnitCli);
// kurento-client's Transaction calls Node's domain.Domain as a plain function
// (`Transaction.super_.call(this)`); Domain is an ES class in current Node, so every
// beginTransaction()/transaction() throws "Class constructor Domain cannot be invoked without
// 'new'" before anything is sent. With --domain-shim (default) the client is loaded with
// domain.Domain hidden, so it uses its own FakeDomain fallback (the path it takes in browsers).
if (argv['domain-shim'] !== false) {
  const domain = require('domain');
  const RealDomain = domain.Domain;
  domain.Domain = undefined;
  global.kurentoClient = require('kurento-client');
  domain.Domain = RealDomain;
} else {
  global.kurentoClient = require('kurento-client');
}

const TEST_DIR = path.resolve(argv.dir || 'clients/javascript/client/test');
if (argv.ws_uri) QUnit.config.ws_uri = argv.ws_uri;
QUnit.config.prefix = argv.prefix || '';
if (argv.timeout_factor) QUnit.config.timeout_factor = String(argv.timeout_factor);

const results = [];
let current = [];
QUnit.log((d) => { if (!d.result) current.push(String(d.message || '') + (d.actual !== undefined ? ` (actual: ${d.actual}, expected: ${d.expected})` : '')); });
QUnit.testDone((d) => {
  results.push({module: d.module, name: d.name, failed: d.failed, passed: d.passed, total: d.total, errors: current});
  current = [];
});
QUnit.done(() => {
  const out = argv.json || 'results.json';
  fs.writeFileSync(out, JSON.stringify(results, null, 1));
  const byModule = {};
  for (const r of results) {
    const m = (byModule[r.module] = byModule[r.module] || {pass: 0, fail: 0});
    r.failed ? m.fail++ : m.pass++;
  }
  console.log('\nPer module (tests): ' + JSON.stringify(byModule));
});

// Some tests throw inside callbacks (`if (error) throw error`): count that as the running
// test's failure instead of ending the whole run.
process.on('uncaughtException', (error) => {
  try {
    QUnit.pushFailure('Uncaught: ' + (error && error.message || error), error && error.stack);
  } catch (outside) {
    console.error('Uncaught outside a test:', error);
  }
});

require(path.join(TEST_DIR, '_common.js'));
require(path.join(TEST_DIR, '_proxy.js'));

// --media_dir DIR: the suites' test media (URL_SMALL, URL_BARCODES...: files on the internet)
// served from DIR on 127.0.0.1 instead, with the same relative paths (format/small.webm,
// filter/barcodes.webm...). tests/kurento_client/make_media.py makes them.
let mediaServer = null;
if (argv.media_dir) {
  const http = require('http');
  const root = path.resolve(argv.media_dir);
  mediaServer = http.createServer((request, response) => {
    const file = path.join(root, decodeURIComponent(new URL(request.url, 'http://x').pathname));
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file)) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, {'Content-Length': fs.statSync(file).size});
    fs.createReadStream(file).pipe(response);
  });
  mediaServer.listen(0, '127.0.0.1');
  mediaServer.unref();
  const base = global.URL_VIDEO_FILES;
  const local = () => `http://127.0.0.1:${mediaServer.address().port}/`;
  QUnit.begin(() => {
    for (const name of Object.keys(global)) {
      if (/^URL_/.test(name) && typeof global[name] === 'string' && global[name].startsWith(base)) {
        global[name] = local() + global[name].slice(base.length);
      }
    }
  });
}

const suites = argv._.length ? argv._ : ['.', 'core', 'elements', 'filters', 'transactions'];
for (const entry of suites) {
  const full = path.resolve(TEST_DIR, entry);
  const files = fs.statSync(full).isDirectory()
    ? fs.readdirSync(full).filter((f) => f.endsWith('.js') && !f.startsWith('_')).sort().map((f) => path.join(full, f))
    : [full];
  for (const file of files) {
    if (!argv.all && /(^|\/)(waiting|reconnect)\.js$/.test(file)) continue; // 2-minute wait; KMS-specific socket internals
    require(file);
  }
}
QUnit.load();
