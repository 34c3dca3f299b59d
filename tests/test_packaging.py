"""`pip install -e .` (the Makefile's) gives the commands of pyproject.toml, and they run from any directory."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def console_scripts():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return re.findall(r'^([\w-]+) = "', section, re.M)


def outside_the_repository(cmd, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)


def test_every_console_script_answers_help_from_another_directory(tmp_path):
    scripts = console_scripts()
    assert len(scripts) == 8 and "eps-figures" in scripts and "eps-compare" in scripts
    bin_dir = os.path.dirname(sys.executable)
    for name in scripts:
        proc = outside_the_repository([os.path.join(bin_dir, name), "--help"], tmp_path)
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), (name, proc.stdout[-500:], proc.stderr[-2000:])
    assert os.listdir(str(tmp_path)) == []  # --help writes nothing


def test_the_module_commands_run_from_another_directory(tmp_path):
    for module in ("eps_resnet.figures", "eps_resnet.frontier", "eps_resnet.study", "eps_resnet.compare"):
        proc = outside_the_repository([sys.executable, "-m", module, "--help"], tmp_path)
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), (module, proc.stderr[-2000:])
