"""Load an export with plain TensorFlow only (no tensorpack, no eps_resnet) and save its logits on images.

    python tests/programs/load_export.py EXPORT_DIR IMAGES.npy LOGITS.npy
"""
import sys

import numpy as np
import tensorflow as tf

export_dir, images, out = sys.argv[1:4]
fn = tf.saved_model.load(export_dir).signatures["serving_default"]
outputs = fn(image=tf.constant(np.load(images)))
assert set(outputs) == {"logits", "probabilities", "classes"}, set(outputs)
assert "tensorpack" not in sys.modules and "eps_resnet" not in sys.modules
np.save(out, outputs["logits"].numpy())
