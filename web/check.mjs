// Node check of the WebAssembly module through web/infer.js, the page's own
// wrapper: prints one line per raw image, as infer-c's C example does.
//
//   node web/check.mjs WASM MODEL IMAGE.rgb...   (FILE \t CLASS \t INDEX \t PROBABILITY)
//
// infer-c/tests/wasm.rs runs it on the sample images and compares the lines
// with `classify --json`.
import { readFileSync } from 'node:fs';
import { loadInfer } from './infer.js';

const [wasmPath, modelPath, ...images] = process.argv.slice(2);
if (!wasmPath || !modelPath || images.length === 0) {
  console.error('usage: node web/check.mjs WASM MODEL IMAGE.rgb...');
  process.exit(2);
}
const infer = await loadInfer(readFileSync(wasmPath));
const model = infer.open(readFileSync(modelPath));
for (const path of images) {
  const r = model.classify(readFileSync(path));
  // Float32 values print as their shortest double; toPrecision(9) reads back
  // as the same float.
  console.log(`${path}\t${model.classNames[r.top]}\t${r.top}\t${r.probability.toPrecision(9)}`);
}
