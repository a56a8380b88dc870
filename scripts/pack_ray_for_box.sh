#!/usr/bin/env bash
# Packs a pruned Ray for a box without Ray or internet (scripts/gpu_data_scaling.sh unpacks it):
#   bash scripts/pack_ray_for_box.sh RAY_WHEEL DEPS_WHEEL_DIR OUT.tar.xz
# RAY_WHEEL: e.g. ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl (79 MB); DEPS_WHEEL_DIR: wheels of
# Ray's requirements the box lacks (jsonschema, referencing, jsonschema-specifications, rpds-py for
# the box's Python), unpacked beside it. Removed: jars/ (Java), the ML libraries (rllib tune train
# serve data llm air: core Ray never imports them), the dashboard's JS bundle (its folder and
# index.html stay: the dashboard head checks for them), tests; the native binaries' symbol tables
# (strip --strip-unneeded keeps what the dynamic linker needs). 2.60.0 cp312: 201 MB -> 17 MB
# (.tar.xz). Checked with the same pruning of the cp311 wheel in a venv holding only Ray's minimal
# requirements: ray.init + tasks, tests/data/test_ray_engine.py, benchmarks/data_scaling.py.
set -euo pipefail
whl=$(realpath "$1"); deps=$(realpath "$2"); out=$(realpath -m "$3")
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cd "$d"
python3 -m zipfile -e "$whl" .
rm -rf ./*.data
for w in "$deps"/*.whl; do python3 -m zipfile -e "$w" .; done
cd ray
rm -rf jars rllib tune train serve data llm air
find dashboard/client/build -mindepth 1 -maxdepth 1 ! -name index.html ! -name favicon.ico ! -name asset-manifest.json -exec rm -rf {} +
mkdir -p dashboard/client/build/static
find . -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
find . -type f \( -name '*.so' -o -name '*.so.*' \) -exec strip --strip-unneeded {} +
strip --strip-unneeded core/src/ray/gcs/gcs_server core/src/ray/raylet/raylet
chmod +x core/src/ray/gcs/gcs_server core/src/ray/raylet/raylet
cd ..
tar --owner=0 --group=0 --sort=name -cf - ./* | xz -9e -T0 >"$out"
ls -la "$out"
