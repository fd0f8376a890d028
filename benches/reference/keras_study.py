"""The reference study's runs in its own framework (TensorFlow/Keras) on our CIFAR-10 files.

`trainer study` compares our figures with those the Keras study published (Colab GPU, the
original CIFAR-10). Our data set is decoded from a JPEG export, so part of any gap may be the
data, not the trainer. This script runs the reference's Keras models and settings on the very
files `trainer study` reads, on this machine, so the report can show the three figures side by
side: published, Keras on our data, ours.

Needs tensorflow-cpu (`bash ../shared/anchors/setup.sh --tf` makes /tmp/yardstick-tf-venv):

  /tmp/yardstick-tf-venv/bin/python benches/reference/keras_study.py \\
      --data ../shared/cifar10/cifar-10-batches-bin [--only model1-es,model3-es,model3-10k] \\
      [--seeds 1,2] [--out runs/keras]

What it does, as the reference did: each architecture is built from our own spec file
(`models/<model>.json`, so the layers are the same as ours; Keras' defaults everywhere else:
Glorot-uniform kernels, zero biases, batch norm with momentum 0.99 and epsilon 1e-3); pixels
scaled to [0, 1]; Adam 0.001, batch 32, categorical cross-entropy; the test set is the
validation set; early stopping on val_loss with the patience of `trainer study` (7 for model 1,
10 for model 3), best weights restored; the subset run (`model3-10k`) continues from the weights
of `model3-es` (same seed) on 10,000 training images drawn stratified (1,000 per class) with the
seed. Threads: 2 intra-op (the machine's cores).

Results: `<out>/results.json`, a list with one entry per (run, seed): test accuracy and loss
of the weights kept, epochs run, best epoch, seconds per epoch, the history, TensorFlow's version,
the date. Finished (run, seed) pairs are skipped, so rerunning resumes; `model3-es` also saves its
Keras model (`<out>/model3-es-seed<N>.keras`) for `model3-10k`. `trainer study --report-only`
reads the results file and adds the "Keras, our data" column to docs/RESULTS.md.
"""
import argparse, datetime, json, os, platform, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# id: (model, epochs, patience or None, subset or None, run it starts from or None).
# The same runs as trainer-cli/src/study/mod.rs (RUNS).
RUNS = {
    "model1-35": ("model1", 35, None, None, None),
    "model1-es": ("model1", 35, 7, None, None),
    "model2-50": ("model2", 50, None, None, None),
    "model3-es": ("model3", 50, 10, None, None),
    "model3-10k": ("model3", 50, 10, 10_000, "model3-es"),
}


def load_cifar10(data, np):
    """The CIFAR-10 binary files: (x_train, y_train, x_test, y_test), x as NHWC float32 in [0, 1]."""
    def read(names):
        raw = b"".join(open(os.path.join(data, n), "rb").read() for n in names)
        rec = np.frombuffer(raw, np.uint8)
        if rec.size % 3073:
            sys.exit(f"{data}: the files are not whole 3,073-byte records")
        rec = rec.reshape(-1, 3073)
        x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype("float32") / 255.0
        return x, rec[:, 0].astype("int64")
    x_train, y_train = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    x_test, y_test = read(["test_batch.bin"])
    return x_train, y_train, x_test, y_test


def build(model, L, keras):
    """The Keras model of `models/<model>.json`."""
    spec = json.load(open(os.path.join(REPO, "models", f"{model}.json")))
    i = spec["input"]
    inp = L.Input(shape=(i["height"], i["width"], i["channels"]))
    x = inp
    layers = spec["layers"]
    for n, l in enumerate(layers):
        t = l["type"]
        last = n == len(layers) - 1
        if t == "conv2d":
            x = L.Conv2D(l["filters"], l["kernel"], strides=l.get("stride", 1), padding=l.get("padding", "valid"))(x)
        elif t == "dense":
            x = L.Dense(l["units"], activation="softmax" if last else None)(x)
        elif t == "relu":
            x = L.ReLU()(x)
        elif t == "batchnorm":
            x = L.BatchNormalization()(x)
        elif t == "maxpool2d":
            x = L.MaxPool2D(l["size"], l.get("stride", l["size"]), padding=l.get("padding", "valid"))(x)
        elif t == "global_avg_pool":
            x = L.GlobalAveragePooling2D()(x)
        elif t == "flatten":
            x = L.Flatten()(x)
        elif t == "dropout":
            x = L.Dropout(l["rate"])(x)
        else:
            sys.exit(f"models/{model}.json: layer type {t!r} is not one the reference study used")
    return keras.Model(inp, x)


def stratified(y, n, seed, np):
    """n indices of y, n / classes per class, drawn with seed (sorted)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in classes])
    return np.sort(idx)


def run_one(rid, seed, data, out, tf, np):
    model, epochs, patience, subset, init = RUNS[rid]
    keras, L = tf.keras, tf.keras.layers
    x_train, y_train, x_test, y_test = data
    tf.keras.utils.set_random_seed(seed)
    if init:
        path = os.path.join(out, f"{init}-seed{seed}.keras")
        if not os.path.exists(path):
            sys.exit(f"{rid} starts from {init}'s weights and {path} does not exist: run --only {init} first")
        m = keras.models.load_model(path)
    else:
        m = build(model, L, keras)
    m.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy", metrics=["accuracy"])
    if subset:
        idx = stratified(y_train, subset, seed, np)
        x_train, y_train = x_train[idx], y_train[idx]
    yt = keras.utils.to_categorical(y_train, 10)
    yv = keras.utils.to_categorical(y_test, 10)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)
            print(f"{rid} seed {seed} epoch {epoch + 1}/{epochs}: " +
                  " ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()) + f" ({times[-1]:.0f} s)", flush=True)

    callbacks = [Timer()]
    stop = None
    if patience is not None:
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        callbacks.append(stop)
    h = m.fit(x_train, yt, batch_size=32, epochs=epochs, validation_data=(x_test, yv),
              callbacks=callbacks, verbose=0)
    loss, acc = m.evaluate(x_test, yv, batch_size=256, verbose=0)
    if rid == "model3-es":
        m.save(os.path.join(out, f"{rid}-seed{seed}.keras"))
    hist = h.history
    n = len(hist["loss"])
    best = None
    if stop is not None:
        best = int(np.argmin(hist["val_loss"])) + 1
    return {
        "id": rid, "seed": seed, "model": model,
        "test_accuracy": round(float(acc), 6), "test_loss": round(float(loss), 6),
        "epochs_run": n, "best_epoch": best, "stopped_early": stop is not None and n < epochs,
        "seconds_per_epoch": round(float(np.median(times)), 2), "threads": 2,
        "train_images": int(len(x_train)), "starts_from": init,
        "history": [{k: round(float(v[e]), 6) for k, v in hist.items()} for e in range(n)],
        "tensorflow": tf.__version__, "python": platform.python_version(),
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["benches/reference/keras_study.py"] + sys.argv[1:]),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with the CIFAR-10 binary files")
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated run ids")
    p.add_argument("--seeds", default="1", help="comma-separated seeds")
    p.add_argument("--out", default=os.path.join(REPO, "runs", "keras"))
    a = p.parse_args()
    only = a.only.split(",")
    bad = [r for r in only if r not in RUNS]
    if bad:
        sys.exit(f"unknown run {bad[0]!r} (runs: {', '.join(RUNS)})")
    import numpy as np, tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    os.makedirs(a.out, exist_ok=True)
    results_path = os.path.join(a.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else []
    data = load_cifar10(a.data, np)
    for seed in [int(s) for s in a.seeds.split(",")]:
        for rid in [r for r in RUNS if r in only]:  # study order: model3-es before model3-10k
            if any(r["id"] == rid and r["seed"] == seed for r in results):
                print(f"skipping {rid} seed {seed}: in {results_path}", flush=True)
                continue
            r = run_one(rid, seed, data, a.out, tf, np)
            results = [x for x in results if not (x["id"] == rid and x["seed"] == seed)] + [r]
            tmp = results_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(results, f, indent=1)
                f.write("\n")
            os.replace(tmp, results_path)
            print(f"{rid} seed {seed}: test accuracy {r['test_accuracy']:.4f}, loss {r['test_loss']:.4f}, "
                  f"{r['epochs_run']} epochs (best {r['best_epoch']}) -> {results_path}", flush=True)


if __name__ == "__main__":
    main()
