# Bash completion for Xenon's xe.  Source it:  . scripts/xe-completion.bash
# Command names come from `xe help --all --minimal`; parameter names from
# `xe help <command>` (its reqd/optional params lines); for <class>-list and
# -param-* commands, field names from `xe <class>-list params=all` are offered too.

_xe_commands_cache=""

_xe_commands() {
  if [ -z "$_xe_commands_cache" ]; then
    _xe_commands_cache=$(xe help --all --minimal 2>/dev/null | tr ',' ' ')
  fi
  printf '%s' "$_xe_commands_cache"
}

# The parameter names of one command, each followed by '='.
_xe_params() {
  local cmd=$1 line names=""
  while IFS= read -r line; do
    case "$line" in
      *"reqd params"*|*"optional params"*)
        names="$names ${line#*: }" ;;
    esac
  done < <(xe help "$cmd" 2>/dev/null)
  names=${names//,/ }
  local n out=""
  for n in $names; do
    case "$n" in
      "<vm-selectors>"|"<host-selectors>") out="$out uuid= --multiple" ;;
      *:) out="$out $n" ;;          # map prefixes such as device-config:
      *) out="$out $n=" ;;
    esac
  done
  case "$cmd" in
    *-list|*-param-set|event-wait) out="$out params= --minimal" ;;
  esac
  printf '%s' "$out"
}

_xe() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  COMPREPLY=()
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$(_xe_commands)" -- "$cur"))
    return 0
  fi
  local cmd=${COMP_WORDS[1]}
  case "$cur" in
    -*)
      COMPREPLY=($(compgen -W "-s -p -u -pw -pwf --nossl --trust-on-first-use --minimal --multiple --force --all" -- "$cur"))
      return 0 ;;
    *=*)
      local key=${cur%%=*} val=${cur#*=}
      case "$key" in
        filename) COMPREPLY=($(compgen -f -P "$key=" -- "$val")) ;;
        *uuid)
          local cls=${key%-uuid}; [ "$key" = uuid ] && cls=${cmd%%-*}
          COMPREPLY=($(compgen -P "$key=" -W "$(xe "$cls-list" --minimal 2>/dev/null | tr ',' ' ')" -- "$val")) ;;
      esac
      return 0 ;;
  esac
  compopt -o nospace 2>/dev/null
  COMPREPLY=($(compgen -W "$(_xe_params "$cmd")" -- "$cur"))
  return 0
}

complete -F _xe xe
