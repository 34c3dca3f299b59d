"""A training step of this project against PyTorch on the same network and machine, side by side in one run.

Contenders, each in its own process, built once and warmed up, then timed in interleaved rounds (every round
runs each of them for --steps steps, in a rotating order, so the machine's noise hits them alike):
- ours, plain:  the plain pre-activation ResNet, trained exactly as `train_cifar.py --plain` trains it (the same
  train() with its session, callbacks and input queue; only the images are synthetic: --fake);
- ours, gated:  the ε-ResNet (ε 2.5), trained as `train_cifar.py` trains it;
- torch eager / torch.compile: the same network, parameters and loss in PyTorch (bench/torch_peer.py), if a
  Python with torch is found (--torch-python, default: $TORCH_PYTHON). PyTorch is never a dependency of the
  project; install it in a separate environment:
      python -m venv ~/torch-env && ~/torch-env/bin/pip install torch numpy
      TORCH_PYTHON=~/torch-env/bin/python python bench/peers.py
Each process may use every core this one may use (threads: ours as training sets them, torch.set_num_threads).

Prints per batch size the median step time, the ratio to torch.compile (target: ours <= 1.00), gated / plain
(target <= 1.02; median of the per-round ratios), and the fraction of the machine's peak each reaches: a training
step is counted as 3 forward passes (6 FLOPs per multiply-accumulate of the plan), the peak is the best of a
4096x4096 float32 matrix product (NumPy here, and torch's when present).

    python bench/peers.py [-n 5] [--batches 32,128] [--rounds 15] [--steps 3]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
WARMUP_STEPS = 5


# ---- the project's contender (a training run that waits for the conductor between rounds) -----------------------
def project_worker(n: int, batch: int, plain: bool, logdir: str, threads=None, xla=False, grappler=None):
    import dataclasses
    if xla:  # as cli.recipe_from_args does for --xla, before TensorFlow loads
        os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") + " --tf_xla_cpu_global_jit").strip()
    import eps_resnet  # noqa: F401
    from eps_resnet import training
    from eps_resnet.recipes import CIFAR10
    from tensorpack import Callback
    if threads or grappler:  # another session than training's, for comparison (--sessions, --grappler)
        training_creator = training.session_creator

        def session_creator(recipe, ranks=None, plan=None):
            creator = training_creator(recipe, ranks, plan)
            if threads:
                creator.threads, creator.ops_at_once = threads
            if grappler:
                options = creator.config.graph_options.rewrite_options
                options.disable_meta_optimizer = False
                if grappler != "all":
                    options.optimizers.extend(grappler.split(","))
            return creator
        training.session_creator = session_creator

    class Conductor(Callback):
        """After the warm-up, answer `steps K` with the time of the next K steps (callbacks' per-step work
        included, as in training); `quit` ends the process."""

        def _setup_graph(self):
            self.done, self.todo, self.start = 0, None, 0.0

        def _trigger_step(self):
            self.done += 1
            if self.todo is None and self.done < WARMUP_STEPS:
                return
            if self.todo is None:
                config = self.trainer.sess._config  # the session as made: what training runs with
                print("ready " + json.dumps({"threads": [config.intra_op_parallelism_threads,
                                                         config.inter_op_parallelism_threads]}), flush=True)
            else:
                self.todo -= 1
                if self.todo > 0:
                    return
                print("time %.6f" % (time.perf_counter() - self.start), flush=True)
            words = sys.stdin.readline().split()
            if not words or words[0] == "quit":
                sys.stdout.flush()
                os._exit(0)
            self.todo, self.start = int(words[1]), time.perf_counter()

    recipe = dataclasses.replace(CIFAR10, num_units=n, batch=batch, epsilon=None if plain else 2.5, fake_data=True,
                                 steps_per_epoch=10 ** 9, max_epoch=1, logdir=logdir, workers=0, seed=0, xla=xla)
    training.train(recipe, extra_callbacks=[Conductor()])


# ---- the conductor ------------------------------------------------------------------------------------------------
class Contender:
    def __init__(self, name, cmd, log):
        self.name, self.log = name, log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                     text=True, env=dict(os.environ, PYTHONPATH=ROOT))

    def ready(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("ready "):
                return json.loads(line[6:])
        self.fail("ended before it was ready")

    def time(self, steps) -> float:
        self.proc.stdin.write("steps %d\n" % steps)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.startswith("time "):
            self.fail("answered %r" % line)
        return float(line.split()[1]) / steps

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def fail(self, what):
        self.proc.kill()
        self.log.flush()
        with open(self.log.name) as f:
            tail = f.read()[-3000:]
        sys.exit("peers: %s %s; its log ends:\n%s" % (self.name, what, tail))


def measure_peak(torch_python) -> tuple:
    """(best GFLOP/s of a 4096² float32 matrix product, what reached it)."""
    code = ("import time, numpy as np\n"
            "a = np.random.rand(4096, 4096).astype(np.float32); b = a.T.copy(); a @ b\n"
            "ts = []\nfor _ in range(5):\n    s = time.perf_counter(); a @ b; ts.append(time.perf_counter() - s)\n"
            "print(2 * 4096 ** 3 / min(ts) / 1e9)\n")
    found = {"NumPy": float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout)}
    if torch_python:
        torch_code = ("import time, torch\ntorch.set_num_threads(%d)\n"
                      "a = torch.rand(4096, 4096); b = torch.rand(4096, 4096); a @ b\n"
                      "ts = []\nfor _ in range(5):\n    s = time.perf_counter(); a @ b; ts.append(time.perf_counter() - s)\n"
                      "print(2 * 4096 ** 3 / min(ts) / 1e9)\n" % len(os.sched_getaffinity(0)))
        found["torch"] = float(subprocess.run([torch_python, "-c", torch_code], capture_output=True, text=True,
                                              check=True).stdout)
    best = max(found, key=found.get)
    return found[best], best


def compare(args, batch, plan, tmp, torch_python, peak):
    cases = {"ours, plain": [sys.executable, __file__, "--worker", "plain"],
             "ours, gated": [sys.executable, __file__, "--worker", "gated"]}
    for intra, inter in args.sessions:
        cases["plain %d/%d thr" % (intra, inter)] = [sys.executable, __file__, "--worker", "plain",
                                                     "--threads", "%d,%d" % (intra, inter)]
    for passes in args.grappler:
        cases["plain, Grappler %s" % passes] = [sys.executable, __file__, "--worker", "plain", "--grappler", passes]
    if args.xla:
        cases["plain --xla"] = [sys.executable, __file__, "--worker", "plain", "--xla"]
    if torch_python:
        peer = [torch_python, os.path.join(ROOT, "bench", "torch_peer.py"), "--plan", os.path.join(tmp, "plan.json")]
        cases["torch eager"] = peer
        cases["torch.compile"] = peer + ["--compile"]
    contenders = []
    try:
        for i, (name, cmd) in enumerate(cases.items()):
            extra = (["--n", str(args.n), "--batch", str(batch), "--logdir", os.path.join(tmp, "run%d-%d" % (batch, i))]
                     if cmd[1] == __file__ else ["--batch", str(batch)])
            log = open(os.path.join(tmp, "log%d-%d.txt" % (batch, i)), "w")
            contenders.append(Contender(name, cmd + extra, log))
            info = contenders[-1].ready()  # one at a time: start-ups do not overlap with anything timed
            print("  %s: %s" % (name, " ".join("%s %s" % kv for kv in info.items())), flush=True)
            if "params" in info and info["params"] != plan.num_params + plan.side_params:
                contenders[-1].fail("has %d parameters, ours %d" % (info["params"], plan.num_params + plan.side_params))
        times = {c.name: [] for c in contenders}
        for r in range(args.rounds):
            for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
                times[c.name].append(c.time(args.steps))
    finally:
        for c in contenders:
            c.close()
    flops = 6 * plan.flops * batch  # forward + the two backward products, per step
    reference = "torch.compile" if "torch.compile" in times else None
    print("\nbatch %d: median step of %d rounds x %d steps" % (batch, args.rounds, args.steps))
    for name, t in times.items():
        med = np.median(t)
        line = "  %-18s %7.1f ms  %5.1f%% of peak" % (name, med * 1e3, 100 * flops / med / 1e9 / peak)
        if reference and name != reference:
            q1, ratio, q3 = np.percentile(np.array(t) / np.array(times[reference]), [25, 50, 75])
            line += "   / torch.compile %.3f (quartiles %.3f-%.3f)" % (ratio, q1, q3)
        print(line, flush=True)
    q1, ratio, q3 = np.percentile(np.array(times["ours, gated"]) / np.array(times["ours, plain"]), [25, 50, 75])
    print("  gated / plain %.3f (quartiles %.3f-%.3f; target <= 1.02)" % (ratio, q1, q3), flush=True)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--n", type=int, default=5, help="blocks per group (default: %(default)s, ResNet-32)")
    p.add_argument("--batches", default="32,128", help="batch sizes (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="steps per contender and round (default: %(default)s)")
    p.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                   help="a Python interpreter with torch installed (default: $TORCH_PYTHON; none: ours only)")
    p.add_argument("--sessions", type=lambda t: [tuple(map(int, pair.split(","))) for pair in t.split(";")],
                   default=[], metavar="INTRA,INTER;...",
                   help="also time the plain step with these session thread counts (intra-op, inter-op; 0: "
                        "TensorFlow's choice), e.g. '1,0;2,1' (tensorpack's default is 1,0)")
    p.add_argument("--xla", action="store_true", help="also time the plain step trained with --xla")
    p.add_argument("--grappler", action="append", default=[], metavar="PASSES",
                   help="also time the plain step with these Grappler passes (comma-separated, e.g. remapper,"
                        "arithmetic; 'all': TensorFlow's default set); repeatable. Training runs none on a CPU")
    p.add_argument("--worker", choices=["plain", "gated"], help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--logdir", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=lambda t: tuple(map(int, t.split(","))), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return project_worker(args.n, args.batch, args.worker == "plain", args.logdir, args.threads, args.xla,
                              args.grappler[0] if args.grappler else None)

    from eps_resnet.plan import cifar_plan
    plan = cifar_plan(args.n)
    torch_python = args.torch_python
    if torch_python and subprocess.run([torch_python, "-c", "import torch"], capture_output=True).returncode:
        sys.exit("peers: %s cannot import torch; see this file's help for a separate environment" % torch_python)
    if not torch_python:
        print("PyTorch not compared: set TORCH_PYTHON to a Python with torch (see --help); timing ours only")
    peak, by = measure_peak(torch_python)
    print("%s (n=%d), %d parameters in training; %d cores; machine peak %.0f GFLOP/s (%s, 4096² float32 matmul)"
          % (plan.title, args.n, plan.num_params + plan.side_params, len(os.sched_getaffinity(0)), peak, by),
          flush=True)
    tmp = tempfile.mkdtemp(prefix="peers-")
    try:
        plan.save(os.path.join(tmp, "plan.json"))
        for batch in [int(b) for b in args.batches.split(",")]:
            compare(args, batch, plan, tmp, torch_python, peak)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
