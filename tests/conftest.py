import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import eps_resnet  # noqa: E402,F401  (selects legacy Keras before anything imports TensorFlow)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`make demo` once, through demo.py: {"plain", "eps", "export": directories, "proc": the process}."""
    from tests.processes import run_script
    out = str(tmp_path_factory.mktemp("demo") / "demo")
    proc = run_script("demo.py", "--out", out, check=True, timeout=1800)
    return {"plain": os.path.join(out, "plain"), "eps": os.path.join(out, "eps"),
            "export": os.path.join(out, "export"), "proc": proc}


@pytest.fixture(scope="session")
def demo_run(demo):
    """The demo's ε-ResNet run: (logdir, the demo's process)."""
    return demo["eps"], demo["proc"]


TINY = ["--demo", "-n", "1", "--steps-per-epoch", "3"]  # the digits, 3 blocks, 3 steps an epoch


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 2-epoch run (checkpoints model-3 and model-6); tests copy it before changing anything."""
    from eps_resnet.rundir import checkpoint_steps
    from tests.processes import run_script
    logdir = str(tmp_path_factory.mktemp("tiny") / "run")
    run_script("train_cifar.py", *TINY, "--max-epoch", "2", "--logdir", logdir, check=True)
    assert checkpoint_steps(logdir) == [3, 6]
    return logdir
