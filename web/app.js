// The page: pick or drop an image, fit it to the model's input in a canvas
// (centre crop to the model's aspect ratio, then a smoothed resize, as
// `classify` and the trainer prepare images), classify it with infer in
// WebAssembly, show the top classes as bars.
//
// Test hooks: after each classification <body> carries data-top-class,
// data-top-index, data-top-probability (the float, exactly) and data-ms; after
// a timing run, data-bench-median-ms. URL parameters: ?model=PATH,
// ?image=URL (classify it at once), ?bench=N (then time N runs).
import { loadInfer } from './infer.js';

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
};

const params = new URLSearchParams(location.search);
let infer;
let model;
let current; // the last image (an ImageBitmap or HTMLImageElement)
const models = new Map(); // path → opened model

async function useModel(path, bytes) {
  status(`Loading ${path}…`);
  try {
    if (!models.has(path)) {
      const data = bytes ?? (await fetchBytes(path));
      models.set(path, infer.open(data));
    }
    model = models.get(path);
    $('bench').disabled = !current;
    $('preview').width = model.width;
    $('preview').height = model.height;
    $('preview-caption').textContent =
      `what the model sees (${model.width}×${model.height})`;
    status(`${path}: ${model.numClasses} classes, input ${model.width}×${model.height}×` +
      `${model.channels}, scratch ${(model.scratchBytes / 1024).toFixed(0)} KiB. Drop an image.`);
    if (current) classify();
  } catch (e) {
    status(`${path}: ${e.message}`, true);
  }
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

// The model's input from an image: centre crop to the model's aspect ratio,
// resize with smoothing, then the model's channels (RGB, or luma for 1).
function pixels(image) {
  const { width: w, height: h, channels: c } = model;
  const iw = image.naturalWidth ?? image.width;
  const ih = image.naturalHeight ?? image.height;
  let [x, y, cw, ch] = [0, 0, iw, ih];
  if (iw * h > ih * w) {
    cw = Math.min(iw, Math.max(1, Math.round((ih * w) / h)));
    x = Math.floor((iw - cw) / 2);
  } else if (iw * h < ih * w) {
    ch = Math.min(ih, Math.max(1, Math.round((iw * h) / w)));
    y = Math.floor((ih - ch) / 2);
  }
  const canvas = $('preview');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = '#fff'; // transparent pixels read as white, not black
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(image, x, y, cw, ch, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Uint8Array(w * h * c);
  for (let i = 0, j = 0; i < rgba.length; i += 4) {
    const [r, g, b] = [rgba[i], rgba[i + 1], rgba[i + 2]];
    if (c === 1) {
      out[j++] = Math.round(0.2126 * r + 0.7152 * g + 0.0722 * b);
    } else {
      out[j++] = r;
      out[j++] = g;
      out[j++] = b;
      if (c === 4) out[j++] = 255;
    }
  }
  return out;
}

function classify() {
  const input = pixels(current);
  const t0 = performance.now();
  const r = model.classify(input);
  const ms = performance.now() - t0;
  const order = [...r.probs.keys()].sort((a, b) => r.probs[b] - r.probs[a] || a - b);
  const bars = $('bars');
  bars.replaceChildren(
    ...order.slice(0, 5).map((i) => {
      const row = document.createElement('div');
      row.className = 'bar';
      row.dataset.index = i;
      const name = document.createElement('span');
      name.textContent = model.classNames[i];
      const track = document.createElement('span');
      track.className = 'track';
      const fill = document.createElement('span');
      fill.className = 'fill';
      fill.style.display = 'block';
      fill.style.width = `${(100 * r.probs[i]).toFixed(2)}%`;
      track.append(fill);
      const pct = document.createElement('span');
      pct.className = 'pct';
      pct.textContent = `${(100 * r.probs[i]).toFixed(1)} %`;
      row.append(name, track, pct);
      return row;
    }),
  );
  const b = document.body.dataset;
  b.topClass = model.classNames[r.top];
  b.topIndex = r.top;
  b.topProbability = r.probability;
  b.ms = ms.toFixed(3);
  status(`${model.classNames[r.top]}, ${(100 * r.probability).toFixed(1)} % ` +
    `(classified in ${ms.toFixed(2)} ms)`);
  $('bench').disabled = false;
}

// Times `n` classifications of the current image (the network alone: the
// pixels are already in wasm memory); median, min and max in ms.
function bench(n) {
  model.classify(pixels(current));
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    model.run();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(n / 2)];
  document.body.dataset.benchMedianMs = median.toFixed(3);
  status(`median ${median.toFixed(2)} ms per image over ${n} runs ` +
    `(min ${times[0].toFixed(2)}, max ${times[n - 1].toFixed(2)})`);
  return median;
}

async function showImage(blobOrUrl) {
  try {
    const url = typeof blobOrUrl === 'string' ? blobOrUrl : URL.createObjectURL(blobOrUrl);
    const img = $('original');
    img.src = url;
    await img.decode();
    current = img;
    classify();
  } catch (e) {
    status(`cannot read that image: ${e.message}`, true);
  }
}

function wire() {
  const drop = $('drop');
  drop.addEventListener('click', () => $('file').click());
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') $('file').click();
  });
  $('file').addEventListener('change', (e) => {
    if (e.target.files[0]) showImage(e.target.files[0]);
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith('image/'));
    if (file) showImage(file);
  });
  $('model').addEventListener('change', (e) => useModel(e.target.value));
  $('model-file').addEventListener('change', async (e) => {
    const f = e.target.files[0];
    if (f) useModel(f.name, new Uint8Array(await f.arrayBuffer()));
  });
  $('bench').addEventListener('click', () => bench(200));
}

async function main() {
  try {
    infer = await loadInfer(await fetch('pkg/infer_c.wasm'));
  } catch (e) {
    status(`cannot load pkg/infer_c.wasm (run web/build.sh): ${e.message}`, true);
    return;
  }
  wire();
  const path = params.get('model') ?? $('model').value;
  $('model').value = path;
  await useModel(path);
  if (params.has('image')) await showImage(params.get('image'));
  if (params.has('bench') && current) bench(Number(params.get('bench')) || 200);
  document.body.dataset.ready = 'true';
}

main();
