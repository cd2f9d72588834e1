#!/usr/bin/env bash
# Sourced with the recipe's arguments: if they contain --conf FILE (or --conf=FILE), source FILE, so that
# its variable assignments override the recipe's defaults; flags given on the command line still win,
# because parse_options.sh runs afterwards. The variables the script itself declared are remembered
# (``_script_vars``): parse_options.sh sets only those, so that a variable the conf file merely adds
# (a setting of another script) is still handed on through ``extra_options``.
_script_vars=" $(compgen -v | tr '\n' ' ') "
_args=("$@")
for ((_i = 0; _i < ${#_args[@]}; _i++)); do
  case "${_args[_i]}" in
    --conf) _conf="${_args[_i + 1]:-}" ;;
    --conf=*) _conf="${_args[_i]#--conf=}" ;;
  esac
done
if [ -n "${_conf:-}" ]; then
  [ -f "$_conf" ] || { echo "$0: --conf $_conf: no such file" >&2; exit 1; }
  # shellcheck disable=SC1090
  . "$_conf"
fi
unset _args _i _conf
