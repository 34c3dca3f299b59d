"""Run an exported .tflite file with the TFLite interpreter only (no tensorpack, no eps_resnet) and save its
logits on images, one batch of 32 at a time (the signature runner resizes its input to each batch).

    python tests/programs/load_tflite.py MODEL.tflite IMAGES.npy LOGITS.npy
"""
import sys

import numpy as np
import tensorflow as tf

model, images, out = sys.argv[1:4]
interpreter = tf.lite.Interpreter(model_path=model)
predict = interpreter.get_signature_runner("serving_default")
x = np.load(images)
outputs = [predict(image=x[i:i + 32]) for i in range(0, len(x), 32)]
assert set(outputs[0]) == {"logits", "probabilities", "classes"}, set(outputs[0])
assert "tensorpack" not in sys.modules and "eps_resnet" not in sys.modules
np.save(out, np.concatenate([o["logits"] for o in outputs]))
