"""The training checkpoint writer: TensorFlow's format, readable by TensorFlow's own Saver; the newest kept."""
import glob
import os

import numpy as np

import eps_resnet  # noqa: F401
from eps_resnet.durability import CheckpointWriter
from eps_resnet.tfcompat import tf, tfv1


def test_writer_keeps_the_newest_checkpoints_that_tensorflow_restores(tmp_path):
    logdir = str(tmp_path)
    with tf.Graph().as_default():
        kernel = tfv1.get_variable("res1.0/conv1/W", initializer=np.arange(6, dtype=np.float32).reshape(2, 3))
        scale = tfv1.get_variable("scale", initializer=np.float32(0.0))
        step = tfv1.train.get_or_create_global_step()
        writer = CheckpointWriter(logdir, max_to_keep=2)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            for s in (100, 1, 2, 3, 4):  # model-100 stands for a later start of the run: not this writer's to delete
                scale.load(float(s), sess)
                step.load(s, sess)
                writer.save(sess, s)
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(logdir, "model-*")))
    assert names == ["model-100.data-00000-of-00001", "model-100.index", "model-3.data-00000-of-00001",
                     "model-3.index", "model-4.data-00000-of-00001", "model-4.index"]
    assert tf.train.latest_checkpoint(logdir) == os.path.join(logdir, "model-4")
    reader = tf.train.load_checkpoint(os.path.join(logdir, "model-4"))
    assert sorted(reader.get_variable_to_shape_map()) == ["global_step", "res1.0/conv1/W", "scale"]
    with tf.Graph().as_default():
        kernel = tfv1.get_variable("res1.0/conv1/W", shape=[2, 3])
        scale = tfv1.get_variable("scale", shape=[])
        step = tfv1.train.get_or_create_global_step()
        with tfv1.Session() as sess:
            tfv1.train.Saver().restore(sess, os.path.join(logdir, "model-3"))
            values = sess.run([kernel, scale, step])
    np.testing.assert_array_equal(values[0], np.arange(6).reshape(2, 3))
    assert values[1:] == [3.0, 3]


def test_writer_adds_one_op_to_the_graph_however_many_variables(tmp_path):
    """No restore op or identity per variable (tf.train.Saver's 2 per variable): the save reads each variable
    through the read op it already has."""
    with tf.Graph().as_default() as graph:
        for i in range(50):
            tfv1.get_variable("v%d" % i, shape=[3])
        before = len(graph.get_operations())
        CheckpointWriter(str(tmp_path), max_to_keep=1)
        added = len(graph.get_operations()) - before
    assert added <= 6, added  # the prefix placeholder, the names and slices constants, SaveV2
