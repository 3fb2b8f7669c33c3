
echo "crossnix-fake: $label cannot boot, this is a fake init" >&2
exit 1
