#!/bin/sh
# mmdebstrap customize hook: every container made from the image gets host keys
# of its own at its first boot, instead of all sharing the keys that the
# package's postinst generated in the image.
set -e
root=$1
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/wsfleet-host-keys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
