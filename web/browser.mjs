// Opens a page in headless Chromium through the DevTools protocol (no npm
// packages: Node's WebSocket, Node ≥ 20.10 with --experimental-websocket, or
// ≥ 22), waits until the page sets <body data-ready="true"> (and
// data-bench-median-ms when the URL asks for ?bench=N), saves a screenshot and
// prints the body's data attributes as JSON.
//
//   node --experimental-websocket web/browser.mjs CHROMIUM URL SCREENSHOT.png [TIMEOUT_S]
//
// infer-c/tests/browser.rs runs it against web/ served on 127.0.0.1.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [chromium, url, screenshot, timeoutS = '60'] = process.argv.slice(2);
if (!chromium || !url || !screenshot) {
  console.error('usage: node --experimental-websocket web/browser.mjs CHROMIUM URL SCREENSHOT.png [TIMEOUT_S]');
  process.exit(2);
}
const deadline = Date.now() + Number(timeoutS) * 1000;
const profile = mkdtempSync(join(tmpdir(), 'infer-chromium-'));
const browser = spawn(chromium, [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-extensions', '--hide-scrollbars', '--remote-debugging-port=0',
  `--user-data-dir=${profile}`, '--window-size=900,720', 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe'] });

function finish(code, message) {
  if (message) console.error(message);
  browser.kill('SIGKILL');
  try { rmSync(profile, { recursive: true, force: true }); } catch {}
  process.exit(code);
}
setTimeout(() => finish(1, `timed out after ${timeoutS} s`), Number(timeoutS) * 1000).unref();

// The DevTools endpoint, from Chromium's stderr.
const endpoint = await new Promise((resolve, reject) => {
  let err = '';
  browser.stderr.on('data', (d) => {
    err += d;
    const m = err.match(/DevTools listening on (ws:\/\/[^\s]+)/);
    if (m) resolve(m[1]);
  });
  browser.on('exit', (code) => reject(new Error(`chromium exited (${code}):\n${err}`)));
}).catch((e) => finish(1, e.message));
const port = new URL(endpoint).port;
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const page = targets.find((t) => t.type === 'page');
if (!page) finish(1, 'no page target');

const ws = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.onerror = () => reject(new Error('cannot connect to the page'));
});
let nextId = 1;
const pending = new Map();
const logs = [];
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  } else if (msg.method === 'Runtime.consoleAPICalled') {
    logs.push(msg.params.args.map((a) => a.value ?? a.description).join(' '));
  } else if (msg.method === 'Runtime.exceptionThrown') {
    logs.push(`exception: ${msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text}`);
  }
};
function send(method, params = {}) {
  const id = nextId++;
  ws.send(JSON.stringify({ id, method, params }));
  return new Promise((resolve, reject) => {
    pending.set(id, (msg) => (msg.error ? reject(new Error(`${method}: ${msg.error.message}`)) : resolve(msg.result)));
  });
}

await send('Runtime.enable');
await send('Page.enable');
await send('Emulation.setDeviceMetricsOverride', { width: 900, height: 720, deviceScaleFactor: 1, mobile: false });
await send('Page.navigate', { url });
const wantBench = new URL(url).searchParams.has('bench');
let data = {};
while (Date.now() < deadline) {
  const r = await send('Runtime.evaluate', {
    expression: 'JSON.stringify({...document.body.dataset, status: document.getElementById("status")?.textContent})',
    returnByValue: true,
  });
  data = JSON.parse(r.result.value ?? '{}');
  if (data.ready === 'true' && (!wantBench || data.benchMedianMs)) break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
if (data.ready !== 'true') finish(1, `the page did not get ready: ${JSON.stringify(data)}\n${logs.join('\n')}`);
const shot = await send('Page.captureScreenshot', { format: 'png' });
writeFileSync(screenshot, Buffer.from(shot.data, 'base64'));
console.log(JSON.stringify({ ...data, console: logs }));
finish(0);
