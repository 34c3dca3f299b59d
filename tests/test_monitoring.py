"""The real TensorBoard server, started as a user starts it, serves what a finished run wrote."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

SERVER_SECONDS = 90  # start-up plus loading the run; the whole test is bounded by this and a 10 s stop


def free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, **query):
    url = "http://127.0.0.1:%d%s%s" % (port, path, "?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read()


@pytest.mark.slow
def test_tensorboard_serves_the_scalars_images_and_histograms_of_a_run(tiny_run):
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")  # the console script requirements install
    assert os.path.exists(tensorboard), "tensorboard is not installed next to %s" % sys.executable
    port = free_loopback_port()
    server = subprocess.Popen([tensorboard, "--logdir", os.path.dirname(tiny_run), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # its own group: the data server it starts goes with it
    try:
        deadline, scalars = time.monotonic() + SERVER_SECONDS, {}
        while time.monotonic() < deadline and "val_error" not in scalars:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                scalars = json.loads(get(port, "/data/plugin/scalars/tags")).get("run", {})
            except OSError:  # not listening yet
                pass
            time.sleep(0.5)
        run = "run"
        blocks = ["res1.0", "res2.0", "res3.0"]
        needed = {"val_error", "train_error", "learning_rate", "epsilon", "discarded_cnt", "cross_entropy_loss"}
        needed |= {"val_error_reduced", "lr_reset"}
        needed |= {"%s/%d_%s" % (q, i, b) for q in ("is_discarded", "batch_response_max", "response_mean")
                   for i, b in enumerate(blocks)}
        assert needed <= set(scalars), sorted(needed - set(scalars))
        curve = json.loads(get(port, "/data/plugin/scalars/scalars", run=run, tag="val_error"))
        assert [step for _, step, _ in curve] == [3, 6]  # one point per epoch, at the epoch's last step
        assert all(0 <= value <= 1 for _, _, value in curve)

        images = json.loads(get(port, "/data/plugin/images/tags"))[run]
        assert {"figures/block_map", "figures/discard_ratio"} <= set(images)
        shown = json.loads(get(port, "/data/plugin/images/images", run=run, tag="figures/block_map"))
        assert len(shown) == 2  # one per epoch
        png = get(port, "/data/plugin/images/individualImage?" + shown[-1]["query"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"

        histograms = json.loads(get(port, "/data/plugin/histograms/tags"))[run]
        kernels = {"weights/%d_%s/conv%d" % (i, b, k) for i, b in enumerate(blocks) for k in (1, 2)}
        assert kernels <= set(histograms), sorted(kernels - set(histograms))
        buckets = json.loads(get(port, "/data/plugin/histograms/histograms", run=run, tag="weights/0_res1.0/conv1"))
        assert buckets and buckets[-1][2]  # [wall time, step, buckets] with buckets
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
