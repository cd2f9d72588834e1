#!/usr/bin/env bash
# Parses --name value / --name=value options into existing shell variables (Kaldi's convention):
# `--stop-stage 3` sets $stop_stage. Source it after the defaults are set:  . recipes/shared/parse_options.sh
# An option with no matching variable is an error, so typos do not pass silently.
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h)
      sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
    --*) name="$1"; [[ $# -ge 2 ]] || { echo "$0: option $1 needs a value" >&2; exit 1; }; value="$2"; shift 2 ;;
    *) break ;;
  esac
  var="${name#--}"; var="${var//-/_}"
  if ! declare -p "$var" >/dev/null 2>&1; then
    echo "$0: unknown option $name" >&2; exit 1
  fi
  printf -v "$var" '%s' "$value"
done
