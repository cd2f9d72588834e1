# Sourced by the bench/gpu scripts on the GPU machine: installs the carried wheels (.whl, made by
# bench/gpu/fetch_wheels.sh) into /tmp/site, puts the repository on PYTHONPATH and an `asr-kd`
# launcher on PATH (the package is not pip-installed there), and makes $OUT.
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m asr_kd.cli "$@"\n' > /tmp/bin/asr-kd && chmod +x /tmp/bin/asr-kd
export PATH=/tmp/bin:$PATH
