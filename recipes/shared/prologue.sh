#!/usr/bin/env bash
# Sourced by every recipes/<corpus>/run.sh after its defaults, with the recipe's arguments:
#   . "$(dirname "$0")/../shared/prologue.sh" "$@"
# Applies --conf FILE and the flags (a flag the recipe does not declare goes to $extra_options, for
# recipes/shared/kd_stages.sh, which is asked right away to check them: a typo fails before any stage
# runs), defines log(), moves to the repository root and makes $exp/log.
conf=""          # a file of variable assignments (e.g. recipes/<corpus>/conf/gpu.sh), applied before the flags
extra_options=()
_shared=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$_shared/load_conf.sh" "$@"
. "$_shared/parse_options.sh"
. "$_shared/log.sh"
cd "$_shared/../.."
unset _shared
mkdir -p "$exp/log"
recipes/shared/kd_stages.sh --stage 8 --stop-stage 7 ${conf:+--conf "$conf"} "${extra_options[@]}"
