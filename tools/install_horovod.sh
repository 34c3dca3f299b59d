#!/usr/bin/env bash
# Build and install Horovod for the given Python (default: .venv/bin/python).
#
# Horovod 0.28.1, PyPI's newest, does not compile against TensorFlow 2.21 as published: its optional
# XLA op file includes headers that TensorFlow moved. XLA ops are opt-in, so we drop that one source
# file from the build and keep everything else. The built wheel is cached outside the repository,
# keyed by Horovod, TensorFlow and Python versions and the build flags, so a second install takes seconds.
#
# Build flags follow the machine: TensorFlow + Gloo always; MPI when mpicxx is on PATH; GPU ops only when
# you ask for them, e.g.  HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME=/usr/local/nccl make horovod
set -euo pipefail

HOROVOD_VERSION=0.28.1
PY=${1:-.venv/bin/python}
CACHE_ROOT=${EPS_RESNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eps-resnet}

die() { echo "install_horovod: $*" >&2; exit 2; }

[ -x "$PY" ] || die "no Python at $PY; run 'make test' or 'make demo' once to create .venv, or pass a Python path"
command -v cmake >/dev/null || die "cmake is missing; install it (apt-get install cmake, or pip install cmake) and run again"
command -v g++ >/dev/null || die "g++ is missing; install it (apt-get install g++) and run again"

TF_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("tensorflow"))' 2>/dev/null) \
    || die "TensorFlow is not installed for $PY; install requirements.txt first"
PY_TAG=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')

export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1
if command -v mpicxx >/dev/null; then
    export HOROVOD_WITH_MPI=1; unset HOROVOD_WITHOUT_MPI || true; FLAVOR=gloo-mpi
else
    export HOROVOD_WITHOUT_MPI=1; unset HOROVOD_WITH_MPI || true; FLAVOR=gloo
fi
if [ -n "${HOROVOD_GPU_OPERATIONS:-}${HOROVOD_GPU_ALLREDUCE:-}" ]; then
    FLAVOR="$FLAVOR-gpu-${HOROVOD_GPU_OPERATIONS:-}${HOROVOD_GPU_ALLREDUCE:-}"
fi
WHEEL_DIR="$CACHE_ROOT/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$PY_TAG-$FLAVOR"

# The installed Horovod is kept only if it was built with what this call asks for (MPI, NCCL): a CPU build
# followed by HOROVOD_GPU_OPERATIONS=NCCL make horovod must rebuild, not keep copying gradients through the host.
installed_ok() {
    "$PY" - "$FLAVOR" >/dev/null 2>&1 <<'PYEOF'
import sys
import horovod.tensorflow as hvd
flavor = sys.argv[1].upper()
ok = hvd.gloo_built() and bool(hvd.mpi_built()) == ("MPI" in flavor) and (bool(hvd.nccl_built()) or "NCCL" not in flavor)
sys.exit(0 if ok else 1)
PYEOF
}

if installed_ok; then
    echo "install_horovod: Horovod $HOROVOD_VERSION already installed for $PY"
else
    if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
        echo "install_horovod: building Horovod $HOROVOD_VERSION ($FLAVOR) against TensorFlow $TF_VERSION;" \
             "this takes 3 to 6 minutes on 2 cores"
        WORK=$(mktemp -d)
        trap 'rm -rf "$WORK"' EXIT
        "$PY" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$WORK" \
            || die "could not download the Horovod sdist from the package registry; check the network and run again"
        tar -xzf "$WORK"/horovod-$HOROVOD_VERSION.tar.gz -C "$WORK"
        SRC="$WORK/horovod-$HOROVOD_VERSION"
        CMAKELISTS="$SRC/horovod/tensorflow/CMakeLists.txt"
        grep -q 'xla_mpi_ops.cc' "$CMAKELISTS" || die "the Horovod sdist changed: xla_mpi_ops.cc is not in $CMAKELISTS"
        sed -i '/xla_mpi_ops\.cc/d' "$CMAKELISTS"
        # The build imports TensorFlow to find its headers and ABI, so it must run in the target environment.
        "$PY" -m pip install --quiet cloudpickle psutil pyyaml packaging cffi
        MAKEFLAGS="-j$(nproc)" "$PY" -m pip wheel --quiet --no-deps --no-build-isolation "$SRC" -w "$WORK/wheel" \
            > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; die "the Horovod build failed (log above)"; }
        mkdir -p "$WHEEL_DIR.tmp"
        cp "$WORK"/wheel/horovod-*.whl "$WHEEL_DIR.tmp/"
        rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"   # publish the cache entry whole or not at all
    fi
    "$PY" -m pip install --quiet --force-reinstall --no-deps "$WHEEL_DIR"/horovod-*.whl
    "$PY" -m pip install --quiet cloudpickle psutil pyyaml packaging cffi
fi

HOROVODRUN="$(dirname "$PY")/horovodrun"
CHECK=$(TF_CPP_MIN_LOG_LEVEL=3 "$HOROVODRUN" --check-build 2>/dev/null) || die "horovodrun --check-build failed"
echo "$CHECK" | sed "s/^/  /"
echo "$CHECK" | grep -q '\[X\] TensorFlow' || die "Horovod was built without TensorFlow support"
installed_ok || die "the installed Horovod lacks what was asked for ($FLAVOR); see the --check-build table above"
