# Sourced by every stand-in (POSIX sh, busybox): `fail_on_demand NAME` exits 1 with a
# message on stderr while /etc/stand-ins/fail/NAME exists (it survives stop/start and
# restart; a recreate clears it). The file's content, if any, is added to the message.
# `record NAME WHAT` appends a line to /var/log/stand-ins/NAME.log, which tests read.
fail_on_demand() {
  if [ -e "/etc/stand-ins/fail/$1" ]; then
    echo "$1: failing on demand (/etc/stand-ins/fail/$1 exists) $(cat "/etc/stand-ins/fail/$1" 2>/dev/null)" >&2
    exit 1
  fi
}

record() {
  mkdir -p /var/log/stand-ins
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $2" >> "/var/log/stand-ins/$1.log"
}
