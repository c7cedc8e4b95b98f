#!/bin/sh
# Stand-in for the DR plan's ./scripts/backup/verify_backups.sh [NAME], in the backup
# service: reports on /data/backups. Fails while /etc/unhealthy or
# /etc/stand-ins/fail/verify_backups exists.
. /usr/lib/stand-ins/fail-on-demand.sh
echo "verify_backups: checking /data/backups ${1:-(all)}"
if [ -f /etc/unhealthy ]; then echo "verify_backups: latest backup is empty" >&2; exit 1; fi
fail_on_demand verify_backups
record verify_backups "verified ${1:-(all)}"
echo "verify_backups: OK"
