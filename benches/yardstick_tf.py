"""(A copy of ../shared/anchors/yardstick_tf.py with `airbench` added: models/airbench.json;
and `--warmup-batches`, 20 as there.)

TensorFlow/Keras yardstick, measured on this machine so that ratios can be taken in one
sitting. Needs tensorflow-cpu (bash ../shared/anchors/setup.sh --tf).

  python yardstick_tf.py train [--model model1|model3|fast|airbench] [--batch 32] [--images 6400] [--threads 2]
  python yardstick_tf.py infer [--model model1|model3|fast|airbench] [--threads 1]

train: Keras model.fit images/s (median of --reps timed passes after a warm-up pass) on random
data of the CIFAR-10 shape; Adam and categorical cross-entropy as in the study.
infer: single-image latency of TensorFlow Lite (LiteRT) with its default XNNPACK delegate in
f32, and of a full-integer int8 conversion (per-channel weights, calibrated on random
images), one JSON line each; also the int8 file's size.
"""
import argparse, json, os, statistics, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FWD_MACS = {"model1": 38_896_896, "model3": 12_158_208, "fast": 95_258_112, "airbench": 118_147_360}

def build(name, L):
    inp = L.Input(shape=(32, 32, 3)); x = inp
    if name == "fast":  # models/fast.json
        def cbr(x, f):
            x = L.Conv2D(f, 3, padding="same")(x); x = L.BatchNormalization()(x); return L.ReLU()(x)
        x = cbr(x, 32); x = cbr(x, 64); p = L.MaxPool2D(2)(x)
        x = L.Add()([cbr(cbr(p, 64), 64), p]); x = cbr(x, 128); x = L.MaxPool2D(2)(x)
        x = cbr(x, 256); p = L.MaxPool2D(2)(x); x = L.Add()([cbr(cbr(p, 256), 256), p])
        x = L.GlobalAveragePooling2D()(x)
        return inp, L.Dense(10, activation="softmax")(x)
    if name == "airbench":  # models/airbench.json (ReLU for GELU)
        x = L.ReLU()(L.Conv2D(24, 2)(x))
        for f in (64, 256, 256):
            x = L.Conv2D(f, 3, padding="same")(x); x = L.MaxPool2D(2)(x)
            x = L.ReLU()(L.BatchNormalization()(x))
            x = L.Conv2D(f, 3, padding="same")(x); x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Flatten()(L.MaxPool2D(3)(x))
        return inp, L.Dense(10, activation="softmax")(x)
    if name == "model1":
        for f in (32, 64, 128):
            x = L.Conv2D(f, 3, activation="relu", padding="same")(x)
            x = L.Conv2D(f, 3, activation="relu", padding="same")(x)
            x = L.MaxPool2D(2)(x)
        x = L.Flatten()(x); x = L.Dropout(0.2)(x); x = L.Dense(128, activation="relu")(x)
    else:
        for f, k in ((32, 5), (64, 3), (128, 3)):
            x = L.Conv2D(f, k, padding="same")(x); x = L.BatchNormalization()(x); x = L.ReLU()(x)
            x = L.MaxPool2D(2, 2, padding="same")(x)
        x = L.Flatten()(x); x = L.Dense(128, activation="relu")(x); x = L.Dropout(0.3)(x)
    return inp, L.Dense(10, activation="softmax")(x)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["train", "infer"])
    p.add_argument("--model", default="model1", choices=sorted(FWD_MACS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=6400)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup-batches", type=int, default=20, help="train: untimed batches first")
    a = p.parse_args()
    a.threads = a.threads or (2 if a.what == "train" else 1)
    import numpy as np, tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(0)
    inp, out = build(a.model, tf.keras.layers)
    m = tf.keras.Model(inp, out)
    if a.what == "infer":
        return infer(a, m, np, tf)
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.rand(a.images, 32, 32, 3).astype("float32")
    y = tf.keras.utils.to_categorical(np.random.randint(0, 10, a.images), 10)
    m.fit(x[: a.batch * a.warmup_batches], y[: a.batch * a.warmup_batches], batch_size=a.batch, epochs=1, verbose=0)  # warm-up, graph build
    rates = []
    for _ in range(a.reps):
        t = time.perf_counter(); m.fit(x, y, batch_size=a.batch, epochs=1, verbose=0, shuffle=False)
        rates.append(a.images / (time.perf_counter() - t))
    med = statistics.median(rates)
    print(json.dumps({"framework": f"tensorflow {tf.__version__}", "model": a.model, "what": "train", "batch": a.batch,
                      "threads": a.threads, "img_per_s": round(med, 1), "runs": [round(r, 1) for r in rates],
                      "gflop_per_s": round(med * 6 * FWD_MACS[a.model] / 1e9, 1)}), flush=True)

def latency(interp, np, reps):
    interp.allocate_tensors()
    i = interp.get_input_details()[0]
    x = np.random.rand(1, 32, 32, 3)
    x = (x * 255 - 128).astype(i["dtype"]) if i["dtype"] != np.float32 else x.astype(np.float32)
    for _ in range(50):
        interp.set_tensor(i["index"], x); interp.invoke()
    meds = []
    for _ in range(reps):
        ts = []
        for _ in range(500):
            t = time.perf_counter(); interp.set_tensor(i["index"], x); interp.invoke(); ts.append(time.perf_counter() - t)
        meds.append(statistics.median(ts) * 1e6)
    return statistics.median(meds), meds

def infer(a, m, np, tf):
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    f32 = conv.convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.rand(1, 32, 32, 3).astype(np.float32)] for _ in range(32))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8; conv.inference_output_type = tf.int8
    i8 = conv.convert()
    for tag, buf in (("tflite xnnpack f32", f32), ("tflite int8", i8)):
        med, runs = latency(tf.lite.Interpreter(model_content=buf, num_threads=a.threads), np, a.reps)
        print(json.dumps({"framework": f"{tag} (tensorflow {tf.__version__})", "model": a.model, "what": "infer-1-image",
                          "threads": a.threads, "latency_us": round(med, 1), "runs": [round(r, 1) for r in runs],
                          "model_bytes": len(buf)}), flush=True)

if __name__ == "__main__":
    main()
