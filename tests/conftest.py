import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import eps_resnet  # noqa: E402,F401  (selects legacy Keras before anything imports TensorFlow)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The README's demo configuration, trained once through the real command line: (logdir, process)."""
    from tests.processes import run_script
    logdir = str(tmp_path_factory.mktemp("demo") / "run")
    proc = run_script("train_cifar.py", "--demo", "--logdir", logdir, check=True, timeout=1200)
    return logdir, proc
