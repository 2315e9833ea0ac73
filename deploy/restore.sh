#!/usr/bin/env bash
# Restore a dump of deploy/backup.sh into a NEW, empty database, then check it.
#
#   deploy/restore.sh DUMP TARGET_DATABASE_URL
#
# The target database is created (it must not exist: a restore never overwrites anything), the
# dump restored into it with pg_restore, and `manage.py smokecheck` run against it: every
# migration of this code applied, the tables readable, the portal answering /healthz in-process.
# Point the services' DATABASE_URL at it only after that passes. A dump of older code is
# migrated first with `manage.py migrate` (docs/deploy.md, "Upgrades").
set -euo pipefail

dump="${1:?usage: restore.sh DUMP TARGET_DATABASE_URL}"
target="${2:?usage: restore.sh DUMP TARGET_DATABASE_URL}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"

if [ -f "$dump.sha256" ]; then
  (cd "$(dirname "$dump")" && sha256sum --check --quiet "$(basename "$dump").sha256")
fi
pg_restore --list "$dump" > /dev/null  # a readable dump, before anything is created

# The server (its URL with the maintenance database) and the new database's name.
name="${target##*/}"; name="${name%%\?*}"
server="${target%/*}/postgres"
if ! [[ "$name" =~ ^[A-Za-z0-9_]+$ ]]; then
  echo "restore.sh: the target database's name must be letters, digits and _ ($name)" >&2
  exit 2
fi
if [ "$(psql --dbname "$server" -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" = 1 ]; then
  echo "restore.sh: database $name exists; restore into a new one" >&2
  exit 1
fi
psql --quiet --dbname "$server" -c "CREATE DATABASE \"$name\""
pg_restore --no-owner --no-acl --exit-on-error --jobs "${RESTORE_JOBS:-2}" --dbname "$target" "$dump"
DATABASE_URL="$target" "$python" "$here/manage.py" smokecheck
