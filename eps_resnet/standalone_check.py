"""Load each exported artefact as a serving stack would, in an interpreter that imports only TensorFlow.

prune.py runs this file with runpy in a fresh Python process (the eps_resnet package is not imported there):
the SavedModel through `tf.saved_model.load`, each .tflite file through the TFLite interpreter's signature
runner. It writes, per artefact, the logits on the calibration images and the median latency at batch 1.

    python -c "import runpy; runpy.run_path('standalone_check.py', run_name='__main__')" \
        SAVED_MODEL_DIR IMAGES.npz RESULTS.npz [MODEL.tflite ...]
"""
import os
import sys
import time

import numpy as np
import tensorflow as tf

BATCH = 64
LATENCY_REPEATS = 30


def median_seconds(run, repeats=LATENCY_REPEATS):
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def saved_model_results(path, images):
    predict = tf.saved_model.load(path).signatures["serving_default"]
    logits = [predict(image=tf.constant(images[i:i + BATCH]))["logits"].numpy() for i in range(0, len(images), BATCH)]
    one = tf.constant(images[:1])
    return np.concatenate(logits), median_seconds(lambda: predict(image=one))


def tflite_results(path, images):
    interpreter = tf.lite.Interpreter(model_path=path)
    predict = interpreter.get_signature_runner("serving_default")  # resizes its input to each batch it is given
    logits = [predict(image=images[i:i + BATCH])["logits"] for i in range(0, len(images), BATCH)]
    one = images[:1]
    return np.concatenate(logits), median_seconds(lambda: predict(image=one))


def main(saved_model, images_path, results_path, *tflite_files):
    assert "tensorpack" not in sys.modules and "eps_resnet" not in sys.modules
    images = np.load(images_path)["images"]
    results = {}
    results["saved_model/logits"], results["saved_model/latency_b1"] = saved_model_results(saved_model, images)
    for path in tflite_files:
        name = os.path.basename(path)
        results[name + "/logits"], results[name + "/latency_b1"] = tflite_results(path, images)
    assert "tensorpack" not in sys.modules and "eps_resnet" not in sys.modules
    np.savez(results_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
