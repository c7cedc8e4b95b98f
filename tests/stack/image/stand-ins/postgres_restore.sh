#!/bin/sh
# Stand-in for the DR plan's ./scripts/backup/postgres_restore.sh, in the backup service.
#   postgres_restore.sh        lists the backups of $BACKUP_DIR (default /data/backups),
#                              newest first, one name per line and nothing else
#   postgres_restore.sh NAME   "restores" NAME: writes its name to RESTORED_FROM in the
#                              database's data volume (/backup/pgdata) and removes the
#                              CORRUPTED flag there that keeps postgres unhealthy
# An unknown name is refused. Fails on demand: /etc/stand-ins/fail/postgres_restore.
. /usr/lib/stand-ins/fail-on-demand.sh
fail_on_demand postgres_restore
dir="${BACKUP_DIR:-/data/backups}"
data="${PGDATA_DIR:-/backup/pgdata}"
if [ "$#" -eq 0 ]; then
  list="$(ls -1r "$dir" 2>/dev/null | grep '\.sql\.gz$')"
  if [ -z "$list" ]; then
    echo "postgres_restore: no backups (*.sql.gz) in $dir" >&2
    exit 1
  fi
  echo "$list"
  exit 0
fi
if [ "$#" -ne 1 ]; then
  echo "usage: postgres_restore.sh [BACKUP]  (no argument lists the backups)" >&2
  exit 2
fi
case "$1" in
  */* | .* | "")
    echo "postgres_restore: refusing backup name '$1': a file name in $dir, as listed" >&2
    exit 2 ;;
esac
if [ ! -f "$dir/$1" ]; then
  echo "postgres_restore: no backup '$1' in $dir; run postgres_restore.sh without an argument to list them" >&2
  exit 1
fi
echo "Restoring $1 into voiceai_testing"
echo "$1" > "$data/RESTORED_FROM" || { echo "postgres_restore: cannot write $data" >&2; exit 1; }
rm -f "$data/CORRUPTED"
record postgres_restore "restored $1"
echo "Restore of $1 complete"
