"""Run train_cifar.py with the given arguments as if Horovod were not installed.

    python tests/programs/without_horovod.py ARGS...
"""
import os
import runpy
import sys

sys.modules["horovod"] = None  # Python treats a None entry in sys.modules as a module that cannot be imported
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.argv = ["train_cifar.py"] + sys.argv[1:]
runpy.run_path(os.path.join(root, "train_cifar.py"), run_name="__main__")
