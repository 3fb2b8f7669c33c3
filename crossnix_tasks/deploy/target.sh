# crossnix target-side helper (POSIX sh). Fixed text: every value arrives as a positional argument.
# Invocation:  sh -c 'eval "$1"' crossnix <this text> ACTION ARGS...
#
# One activation keeps its state in a directory S (/run/crossnix/<run-id>, root-owned, world-readable):
#   profile toplevel goal confirm auto systemd unit   what `begin` was asked to do
#   prev-link prev-path prev-current                  the generation and system to restore
#   deadline        epoch seconds; the watchdog rolls back when it passes undecided
#   runner.pid      the detached process running switch-to-configuration (its own session)
#   status          switch-to-configuration's exit code, once it has finished
#   decided/        created (atomically, by mkdir) by whoever settles the outcome first
#   outcome reason  confirmed | kept | rolling-back | rolled-back | rollback-failed | not-changed
#   undo.pid        the process restoring the previous generation (outcome rolling-back)
#   activation.log watchdog.log rollback.log
# Only target-native commands: sh, date, readlink, mkdir, mv, kill, sleep, setsid, nix-env,
# switch-to-configuration, and systemd-run/systemctl when the target runs systemd.
set -u
# The SSH session may vanish at any moment: a write to it then fails instead of killing this script halfway
# (between settling an outcome and acting on it). Long work runs detached, its output in a log file.
trap '' HUP PIPE
self=$1
action=$2
shift 2
PATH="${PATH:-/usr/bin:/bin}:/run/current-system/sw/bin:/run/wrappers/bin"
export PATH

put() { printf '%s\n' "$2" > "$1.tmp" && mv -f "$1.tmp" "$1"; }
get() { if [ -f "$1" ]; then cat "$1"; fi; }
now() { date +%s; }
resolve() { if [ -e "$1" ]; then readlink -f "$1"; fi; }
say() { printf 'crossnix: %s\n' "$*"; }

load() {
  S=$1
  PROFILE=$(get "$S/profile"); TOPLEVEL=$(get "$S/toplevel"); GOAL=$(get "$S/goal")
  CONFIRM=$(get "$S/confirm"); AUTO=$(get "$S/auto"); SYSTEMD=$(get "$S/systemd"); UNIT=$(get "$S/unit")
}

# Run this helper again, detached from the SSH session: ACTION ARGS... (output appended to LOG).
detach() {
  log=$1; shift
  setsid sh -c 'eval "$1"' crossnix "$self" "$@" </dev/null >>"$log" 2>&1 &
}

alive() { pid=$(get "$1"); [ -n "$pid" ] && [ -d "/proc/$pid" ]; }

stop_runner() {
  [ -f "$S/status" ] && return 0
  if [ "$SYSTEMD" = 1 ]; then
    systemctl stop "$UNIT-switch.service" 2>/dev/null
  fi
  if alive "$S/runner.pid"; then
    pid=$(get "$S/runner.pid")
    kill -s TERM -- "-$pid" 2>/dev/null || kill -s TERM "$pid" 2>/dev/null
    n=0
    while alive "$S/runner.pid" && [ $n -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n + 1)); done
    kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL "$pid" 2>/dev/null
  fi
  return 0
}

stop_timer() {
  if [ "$SYSTEMD" = 1 ]; then systemctl stop "$UNIT-rollback.timer" 2>/dev/null; fi
  return 0
}

# Restore what was there before `begin`: the previous generation for switch/boot, the previous
# running system for test.
restore() {
  case "$GOAL" in
    switch|boot)
      link=$(get "$S/prev-link")
      if [ -n "$link" ]; then
        gen=${link%-link}; gen=${gen##*-}
        nix-env -p "$PROFILE" --switch-generation "$gen" || return 1
        "$PROFILE/bin/switch-to-configuration" "$GOAL"
      else
        # No previous generation: drop the one we added (nothing to re-activate).
        link=$(readlink "$PROFILE" 2>/dev/null)
        rm -f "$PROFILE"
        if [ -n "$link" ]; then rm -f "$(dirname "$PROFILE")/$link"; fi
      fi ;;
    test)
      prev=$(get "$S/prev-current")
      if [ -n "$prev" ]; then "$prev/bin/switch-to-configuration" test; fi ;;
  esac
}

# Settle the outcome as OUTCOME unless somebody already did; prints the outcome that holds.
decide() {
  if mkdir "$S/decided" 2>/dev/null; then
    put "$S/reason" "$2"
    put "$S/outcome" "$1"
    return 0
  fi
  n=0
  while [ "$(get "$S/outcome")" = "" ] && [ $n -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n + 1)); done
  return 1
}

# After winning `decide rolling-back`: stop the runner (and the timer), restore, record the outcome.
undo() { # [from-watchdog]
  put "$S/undo.pid" "$$"
  stop_runner
  if [ "${1:-}" != from-watchdog ]; then stop_timer; fi
  if restore; then put "$S/outcome" rolled-back; say "rolled back"; return 0; fi
  put "$S/outcome" rollback-failed
  say "ROLLBACK FAILED"
  return 1
}

# Roll back in this process (the runner and the watchdog, which are detached already).
rollback() { # rollback S REASON [from-watchdog]
  load "$1"
  if ! decide rolling-back "$2"; then
    say "outcome already decided: $(get "$S/outcome")"
    return 3
  fi
  say "rolling back: $2"
  undo "${3:-}"
}

# Wait while a rollback (ours, detached, or one the runner or the watchdog started) is still restoring:
# until its process is gone, or 30 s when it never wrote undo.pid.
await_rollback() {
  n=0
  while [ "$(get "$S/outcome")" = rolling-back ]; do
    if [ -f "$S/undo.pid" ]; then alive "$S/undo.pid" || break; else [ $n -lt 300 ] || break; fi
    sleep 0.1 2>/dev/null || { sleep 1; n=$((n + 9)); }
    n=$((n + 1))
  done
}

final() {
  case "$(get "$S/outcome")" in rolled-back|rollback-failed|not-changed|confirmed|kept) return 0 ;; esac
  return 1
}

# Nothing more will happen without the deployer: the outcome is final, switch-to-configuration
# succeeded (or failed without auto rollback), or the runner is gone.
settled() {
  final && return 0
  if [ -f "$S/runner.pid" ] && ! alive "$S/runner.pid"; then return 0; fi
  if [ -f "$S/status" ]; then
    if [ "$(get "$S/status")" = 0 ] || [ "$AUTO" != 1 ]; then return 0; fi
  fi
  return 1
}

report() { # the lines the deployer parses
  status=$(get "$S/status")
  if [ -n "$status" ]; then printf 'status %s\n' "$status"
  elif alive "$S/runner.pid"; then printf 'status running\n'
  elif [ -f "$S/runner.pid" ]; then printf 'status lost\n'
  else printf 'status starting\n'; fi
  printf 'outcome %s\n' "$(get "$S/outcome")"
  printf 'current %s\n' "$(resolve /run/current-system)"
  printf 'profile %s\n' "$(resolve "$PROFILE")"
}

case "$action" in
begin) # S PROFILE TOPLEVEL GOAL CONFIRM ACTIVATION_TIMEOUT MAGIC AUTO SYSTEMD UNIT
  S=$1 PROFILE=$2 TOPLEVEL=$3 GOAL=$4 CONFIRM=$5 ACTIVATION_TIMEOUT=$6 MAGIC=$7 AUTO=$8 SYSTEMD=$9 UNIT=${10}
  umask 022
  mkdir -p "$(dirname "$S")" || exit 2
  if ! mkdir "$S"; then say "state directory $S exists already"; exit 2; fi
  put "$S/profile" "$PROFILE"; put "$S/toplevel" "$TOPLEVEL"; put "$S/goal" "$GOAL"
  put "$S/confirm" "$CONFIRM"; put "$S/auto" "$AUTO"; put "$S/systemd" "$SYSTEMD"; put "$S/unit" "$UNIT"
  put "$S/prev-link" "$(readlink "$PROFILE" 2>/dev/null)"
  put "$S/prev-path" "$(resolve "$PROFILE")"
  put "$S/prev-current" "$(resolve /run/current-system)"
  put "$S/deadline" "$(( $(now) + ACTIVATION_TIMEOUT + CONFIRM ))"
  if [ "$MAGIC" = 1 ]; then
    if [ "$SYSTEMD" = 1 ]; then
      systemd-run --unit="$UNIT-rollback" --on-active="${CONFIRM}s" --collect --quiet \
        --setenv=PATH="$PATH" -- /bin/sh -c 'eval "$1"' crossnix "$self" watchdog "$S" || {
        decide not-changed "could not arm the rollback timer"; exit 2; }
    else
      detach "$S/watchdog.log" watchdog "$S"
    fi
    say "rollback armed: the previous generation comes back unless confirmed"
  fi
  case "$GOAL" in
    switch|boot)
      if ! nix-env -p "$PROFILE" --set "$TOPLEVEL"; then
        decide not-changed "nix-env --set failed"; stop_timer; exit 4
      fi ;;
  esac
  if [ "$SYSTEMD" = 1 ]; then
    systemd-run --unit="$UNIT-switch" --collect --quiet --service-type=exec \
      -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER -E NIXOS_NO_CHECK --setenv=PATH="$PATH" \
      -- /bin/sh -c 'eval "$1"' crossnix "$self" run "$S" || { rollback "$S" "systemd-run failed"; exit 5; }
  else
    detach "$S/activation.log" run "$S"
  fi
  say "activation started"
  ;;
run) # S   (detached) switch-to-configuration, then record its exit status
  load "$1"
  put "$S/runner.pid" "$$"
  # Settled before this runner got going (a rollback that found no runner.pid to stop): never switch.
  if [ -d "$S/decided" ]; then say "outcome already decided: $(get "$S/outcome"); not switching"; exit 0; fi
  "$TOPLEVEL/bin/switch-to-configuration" "$GOAL"
  rc=$?
  if [ $rc -eq 0 ]; then put "$S/deadline" "$(( $(now) + CONFIRM ))"; fi
  put "$S/status" "$rc"
  say "switch-to-configuration $GOAL exited with $rc"
  if [ $rc -ne 0 ] && [ "$AUTO" = 1 ]; then rollback "$S" "switch-to-configuration $GOAL failed (exit $rc)"; fi
  ;;
watchdog) # S   (detached, or started by a systemd timer) roll back once the deadline passes
  load "$1"
  put "$S/watchdog.pid" "$$"
  while [ ! -d "$S/decided" ]; do
    if [ "$(now)" -ge "$(get "$S/deadline")" ]; then
      rollback "$S" "not confirmed before the deadline" from-watchdog
      exit $?
    fi
    sleep 1
  done
  ;;
wait) # S SECONDS   until switch-to-configuration has finished (or SECONDS passed); then report
  load "$1"
  n=0
  while [ $n -lt $(( $2 * 10 )) ] && ! settled; do
    sleep 0.1 2>/dev/null || { sleep 1; n=$((n + 9)); }
    n=$((n + 1))
  done
  report
  ;;
hold) # S SECONDS   push the deadline (after a fresh login proved the target reachable)
  load "$1"
  if [ -d "$S/decided" ]; then report; exit 3; fi
  put "$S/deadline" "$(( $(now) + $2 ))"
  report
  ;;
decide) # S OUTCOME REASON   confirm (or keep) the new generation: disarms the rollback
  load "$1"
  if decide "$2" "$3"; then stop_timer; report; exit 0; fi
  await_rollback
  report
  exit 3
  ;;
rollback) # S REASON   settle as rolling-back, then restore detached (a dropped connection cannot stop it halfway)
  load "$1"
  if decide rolling-back "$2"; then
    if [ "$SYSTEMD" = 1 ]; then
      systemd-run --unit="$UNIT-undo" --collect --quiet --service-type=exec --setenv=PATH="$PATH" \
        -- /bin/sh -c 'eval "$1"' crossnix "$self" undo "$S" || detach "$S/rollback.log" undo "$S"
    else
      detach "$S/rollback.log" undo "$S"
    fi
    say "rolling back: $2"
    rc=0
  else
    say "outcome already decided: $(get "$S/outcome")"
    rc=3
  fi
  await_rollback
  if [ $rc -eq 0 ]; then
    get "$S/rollback.log"
    if [ "$(get "$S/outcome")" != rolled-back ]; then rc=1; fi
  fi
  report
  exit $rc
  ;;
undo) # S   (detached) after `rollback` settled the outcome: stop the runner, restore the previous generation
  load "$1"
  exec >>"$S/rollback.log" 2>&1
  undo
  ;;
report) # S
  load "$1"
  report
  ;;
state) # PROFILE   what `inv status` and the pre-flight checks read
  PROFILE=$1
  if [ -d /run/systemd/system ]; then printf 'systemd 1\n'; else printf 'systemd 0\n'; fi
  printf 'profile-link %s\n' "$(readlink "$PROFILE" 2>/dev/null)"
  printf 'profile %s\n' "$(resolve "$PROFILE")"
  printf 'current %s\n' "$(resolve /run/current-system)"
  printf 'booted %s\n' "$(resolve /run/booted-system)"
  for link in "$PROFILE"-*-link; do
    if [ -L "$link" ]; then printf 'generation %s %s\n' "$link" "$(readlink -f "$link")"; fi
  done
  ;;
switch-generation) # PROFILE GENERATION GOAL   manual rollback to a generation, then activate it
  PROFILE=$1
  nix-env -p "$PROFILE" --switch-generation "$2" || exit 1
  "$PROFILE/bin/switch-to-configuration" "$3"
  ;;
*)
  say "unknown action $action" >&2
  exit 64
  ;;
esac
