// A small JavaScript wrapper over infer's WebAssembly module (pkg/infer_c.wasm):
// the C API of infer-c, compiled for wasm32-unknown-unknown without std, with no
// imports. The module never allocates: this wrapper grows its memory by whole
// pages for each buffer (model bytes, handle, scratch, probabilities, image) and
// passes their addresses, as a C caller passes pointers. Works in browsers and
// in Node (no DOM here).

const PAGE = 65536;

export async function loadInfer(wasm) {
  const source = wasm instanceof Response ? await wasm.arrayBuffer() : wasm;
  const { instance } = await WebAssembly.instantiate(source, {});
  return new Infer(instance.exports);
}

export class InferError extends Error {}

class Infer {
  constructor(exports) {
    this.x = exports;
    this.memory = exports.memory;
  }

  // Address of `bytes` fresh bytes at the end of memory (page-aligned, so
  // aligned for anything).
  alloc(bytes) {
    const pages = Math.max(1, Math.ceil(bytes / PAGE));
    return this.memory.grow(pages) * PAGE;
  }

  bytes(ptr, len) {
    return new Uint8Array(this.memory.buffer, ptr, len);
  }

  cString(ptr) {
    const all = new Uint8Array(this.memory.buffer, ptr);
    return new TextDecoder().decode(all.subarray(0, all.indexOf(0)));
  }

  message(status) {
    return this.cString(this.x.infer_error_message(status));
  }

  // Opens a model file (an ArrayBuffer or Uint8Array); throws InferError with
  // infer's reason when it is not a valid model.
  open(modelBytes) {
    const x = this.x;
    const src = modelBytes instanceof Uint8Array ? modelBytes : new Uint8Array(modelBytes);
    const size = x.infer_model_size();
    const detailLen = 512;
    // One region: model bytes, then the handle, the out pointer and the detail text.
    const bytesPtr = this.alloc(src.length + size + 16 + detailLen + 64);
    const storage = Math.ceil((bytesPtr + src.length) / 64) * 64;
    const out = storage + size + 8;
    const detail = out + 8;
    this.bytes(bytesPtr, src.length).set(src);
    const status = x.infer_model_open(bytesPtr, src.length, storage, size, out, detail, detailLen);
    if (status !== 0) {
      throw new InferError(`${this.message(status)}: ${this.cString(detail)}`);
    }
    return new Model(this, storage);
  }
}

class Model {
  constructor(infer, handle) {
    const x = infer.x;
    this.infer = infer;
    this.handle = handle;
    this.height = x.infer_input_height(handle);
    this.width = x.infer_input_width(handle);
    this.channels = x.infer_input_channels(handle);
    this.inputBytes = x.infer_input_bytes(handle);
    this.numClasses = x.infer_num_classes(handle);
    this.scratchLen = x.infer_scratch_len(handle);
    this.scratchBytes = x.infer_scratch_bytes(handle);
    this.classNames = [];
    // Scratch, probabilities, image, and the out values, in one region.
    const probsBytes = this.numClasses * 4;
    const base = infer.alloc(this.scratchBytes + probsBytes + this.inputBytes + 64);
    this.scratch = base;
    this.probs = base + this.scratchBytes;
    this.image = this.probs + probsBytes;
    this.outClass = Math.ceil((this.image + this.inputBytes) / 8) * 8;
    this.outProb = this.outClass + 8;
    const namePtr = this.outProb + 8;
    const nameLen = namePtr + 8;
    for (let i = 0; i < this.numClasses; i++) {
      const status = x.infer_class_name(handle, i, namePtr, nameLen);
      if (status === 0) {
        const view = new DataView(infer.memory.buffer);
        const ptr = view.getUint32(namePtr, true);
        const len = view.getUint32(nameLen, true);
        this.classNames.push(new TextDecoder().decode(infer.bytes(ptr, len)));
      } else {
        this.classNames.push(`class ${i}`);
      }
    }
  }

  // Classifies `pixels`: height × width × channels bytes, row-major HWC.
  // Returns { probs: Float32Array (a copy), top: index, probability }.
  classify(pixels) {
    const { infer } = this;
    if (pixels.length !== this.inputBytes) {
      throw new InferError(
        `the image has ${pixels.length} bytes, the model needs ${this.inputBytes} ` +
          `(${this.height}×${this.width}×${this.channels})`,
      );
    }
    infer.bytes(this.image, this.inputBytes).set(pixels);
    return this.run();
  }

  // Classifies the image already in wasm memory (for timing the network alone).
  run() {
    const { infer } = this;
    const status = infer.x.infer_classify(
      this.handle,
      this.image,
      this.inputBytes,
      this.scratch,
      this.scratchLen,
      this.probs,
      this.numClasses,
      this.outClass,
      this.outProb,
    );
    if (status !== 0) {
      throw new InferError(infer.message(status));
    }
    const view = new DataView(infer.memory.buffer);
    return {
      probs: new Float32Array(infer.memory.buffer, this.probs, this.numClasses).slice(),
      top: view.getUint32(this.outClass, true),
      probability: view.getFloat32(this.outProb, true),
    };
  }
}
