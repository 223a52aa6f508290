# bash completion for flowd-go: commands, their flags, and values where they are a fixed set.
_flowd_go() {
  local cur prev words cword
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  local global="-h --help --conf --log-level --log-time"
  local commands="run conf reload flows status doctor marker stun version help"

  # Values of flags that take one.
  case "$prev" in
    --conf) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --log-level) COMPREPLY=($(compgen -W "trace debug info warn error" -- "$cur")); return ;;
    --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --target-interface) COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur")); return ;;
    --pid|--interval|--experiment|--activity|--dst|--stun-server|--http-server) return ;;
    --format)
      local cmd_for_format=""
      for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        case "$w" in conf|flows|status|stun) cmd_for_format="$w" ;; esac
      done
      case "$cmd_for_format" in
        conf) COMPREPLY=($(compgen -W "yaml json" -- "$cur")) ;;
        flows) COMPREPLY=($(compgen -W "table json" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "text json" -- "$cur")) ;;
      esac
      return ;;
  esac

  # The command given so far (skipping flags and their values).
  local cmd="" sub="" i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    case "$w" in
      --conf|--log-level|--socket|--target-interface|--pid|--interval|--experiment|--activity|--dst|--format|--stun-server|--http-server) ((i++)) ;;
      -*) ;;
      *) if [[ -z "$cmd" ]]; then cmd="$w"; elif [[ -z "$sub" ]]; then sub="$w"; fi ;;
    esac
  done

  local flags=""
  case "$cmd" in
    "") COMPREPLY=($(compgen -W "$commands $global" -- "$cur")); return ;;
    marker) [[ -z "$sub" ]] && { COMPREPLY=($(compgen -W "clean" -- "$cur")); return; }
      flags="--target-interface --remove-qdisc=true --remove-qdisc=false" ;;
    stun) [[ -z "$sub" ]] && { COMPREPLY=($(compgen -W "sample" -- "$cur")); return; }
      flags="--stun-server --http-server --format" ;;
    help) [[ -z "$sub" ]] && { COMPREPLY=($(compgen -W "$commands" -- "$cur")); return; } ;;
    conf) flags="--format" ;;
    reload) flags="--pid" ;;
    flows) flags="--format --watch --interval --experiment --activity --dst --socket" ;;
    status) flags="--format --socket" ;;
  esac
  COMPREPLY=($(compgen -W "$flags $global" -- "$cur"))
}
complete -F _flowd_go flowd-go
