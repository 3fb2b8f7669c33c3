
PATH=/usr/bin:/bin
export PATH
state=/nix/var/crossnix-fake
goal="${1:-}"
case "$goal" in
  switch|boot|test|dry-activate) ;;
  *) echo "Usage: switch-to-configuration [switch|boot|test|dry-activate]" >&2; exit 1 ;;
esac
mkdir -p "$state"
printf '%s %s %s\n' "$label" "$goal" "$(date +%s.%N)" >> "$state/activation.log"
behaviour="$baked"; arg=""
for f in "$state/behaviour.$label" "$state/behaviour"; do
  if [ -s "$f" ]; then read -r behaviour arg < "$f" || true; break; fi
done
case "$behaviour" in
  ok) ;;
  slow) sleep "${arg:-2}" ;;
  fail) echo "crossnix-fake: activation of $label failed (behaviour=fail)" >&2; exit 1 ;;
  hang) echo "crossnix-fake: activation of $label hangs" >&2; exec sleep "${arg:-3600}" ;;
  *) echo "crossnix-fake: unknown behaviour '$behaviour'" >&2; exit 2 ;;
esac
case "$goal" in
  switch|boot)
    ln -sfn "$toplevel" "$state/.boot-default.tmp" && mv -T "$state/.boot-default.tmp" "$state/boot-default" ;;
esac
case "$goal" in
  switch|test) "$toplevel/activate" || exit 1 ;;
  dry-activate) echo "would activate $toplevel" ;;
esac
echo "crossnix-fake: $goal $label done"
