
PATH=/usr/bin:/bin
export PATH
mkdir -p /run
ln -sfn "$toplevel" /run/.current-system.tmp && mv -T /run/.current-system.tmp /run/current-system
