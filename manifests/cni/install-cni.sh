#!/bin/sh
# Installs the `zerotier` CNI plugin and its network config on the node (the DaemonSet's
# install-cni init container runs this). Each file is written under a temporary name in
# its final directory and renamed into place: the runtime never executes a half-copied
# binary ("text file busy") nor reads a half-written config. Temporary names start with a
# dot and end in neither .conf, .conflist nor .json, so runtimes ignore them.
#
# Environment:
#   ZT_NETWORK     the network ID, 16 hex digits (required)
#   CNI_BIN_DIR    where the node's CNI plugins are   [/host/opt/cni/bin]
#   CNI_NET_DIR    where the node's CNI configs are   [/host/etc/cni/net.d]
#   ZT_HOME        the agent's home on the node       [/host/var/lib/zt-agent]
#   ZT_CONFIG_DIR  the ConfigMap's files: `10-zerotier.conflist` (a template replacing the
#                  image's) and `planet` (optional)    [/etc/zerotier]
set -eu

CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
ZT_HOME=${ZT_HOME:-/host/var/lib/zt-agent}
ZT_CONFIG_DIR=${ZT_CONFIG_DIR:-/etc/zerotier}
PLUGIN=${PLUGIN:-/usr/local/bin/zerotier}
TEMPLATE=/usr/local/share/zt-agent/10-zerotier.conflist
CONFLIST=10-zerotier.conflist

network=${ZT_NETWORK:-}
if ! printf '%s' "$network" | grep -Eq '^[0-9a-fA-F]{16}$'; then
    echo "install-cni: ZT_NETWORK must be a network ID of 16 hex digits, not '$network'" >&2
    exit 1
fi

# install FILE DIR NAME MODE: copy FILE to DIR/NAME atomically.
install_file() {
    temporary="$2/.$3.tmp.$$"
    cp "$1" "$temporary"
    chmod "$4" "$temporary"
    mv -f "$temporary" "$2/$3"
}

mkdir -p "$CNI_BIN_DIR" "$CNI_NET_DIR" "$ZT_HOME"
chmod 0700 "$ZT_HOME"

install_file "$PLUGIN" "$CNI_BIN_DIR" zerotier 0755
echo "install-cni: installed $CNI_BIN_DIR/zerotier"

if [ -f "$ZT_CONFIG_DIR/$CONFLIST" ]; then
    TEMPLATE="$ZT_CONFIG_DIR/$CONFLIST"
fi
rendered="$CNI_NET_DIR/.$CONFLIST.rendered.$$"
sed "s/@NETWORK@/$network/g" "$TEMPLATE" > "$rendered"
install_file "$rendered" "$CNI_NET_DIR" "$CONFLIST" 0644
rm -f "$rendered"
echo "install-cni: installed $CNI_NET_DIR/$CONFLIST for network $network"

if [ -f "$ZT_CONFIG_DIR/planet" ]; then
    install_file "$ZT_CONFIG_DIR/planet" "$ZT_HOME" planet 0644
    echo "install-cni: installed the planet from the ConfigMap into $ZT_HOME"
fi
