#!/usr/bin/env bash
# Parses --name value / --name=value options into existing shell variables (Kaldi's convention):
# `--stop-stage 3` sets $stop_stage. Source it after the defaults are set:  . recipes/shared/parse_options.sh
# An option with no matching variable is an error, so typos do not pass silently -- unless the caller
# declared an array `extra_options=()` first: then such options are collected there (as --name value
# pairs) for the caller to hand on to a script that knows them (and fails on typos itself).
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h)  # the script's header comment, then each `name=default  # comment` line as an option
      sed -n '2,/^set -euo/p' "$0" | sed '$d'
      echo "# Options (--name value), with their defaults:"
      sed -n -E '/^set -euo/,/(parse_options|prologue)\.sh/p' "$0" | grep -E '^[a-z_]+=([^(]|$)' \
        | awk '{ split($0, kv, "="); name = kv[1]; gsub("_", "-", name); sub(/^[a-z_]+=/, ""); print "#   --" name " " $0 }'
      exit 0 ;;
    --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
    --*) name="$1"; [[ $# -ge 2 ]] || { echo "$0: option $1 needs a value" >&2; exit 1; }; value="$2"; shift 2 ;;
    *) break ;;
  esac
  var="${name#--}"; var="${var//-/_}"
  if declare -p "$var" >/dev/null 2>&1 && [[ -z "${_script_vars:-}" || "$_script_vars" == *" $var "* ]]; then
    printf -v "$var" '%s' "$value"
  elif declare -p extra_options >/dev/null 2>&1; then
    extra_options+=("$name" "$value")
  else
    echo "$0: unknown option $name" >&2; exit 1
  fi
done
