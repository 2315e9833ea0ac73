#!/usr/bin/env bash
# Back up the portal's database: a pg_dump in the custom format (compressed, restorable table by
# table, in parallel), written atomically, with its SHA-256 beside it.
#
#   deploy/backup.sh [DIR]        DATABASE_URL from the environment (/etc/cloud-portal/portal.env)
#
# Prints the dump's path. Keep the last few days' dumps on another machine; restore with
# deploy/restore.sh. PostgreSQL holds everything that matters; Redis only queues, console tokens
# and caches (docs/deploy.md, "Backups"). IMAGE_STORE is backed up as files (rsync), apart.
set -euo pipefail

: "${DATABASE_URL:?DATABASE_URL must name the database to back up}"
case "$DATABASE_URL" in
  postgres://*|postgresql://*) ;;
  *) echo "backup.sh: DATABASE_URL is not PostgreSQL ($DATABASE_URL)" >&2; exit 2 ;;
esac
dir="${1:-${BACKUP_DIR:-/var/backups/cloud-portal}}"
mkdir -p "$dir"
umask 077
name="portal-$(date -u +%Y%m%dT%H%M%SZ).dump"
tmp="$dir/.$name.partial"
trap 'rm -f "$tmp"' EXIT
# --no-owner/--no-acl: the dump restores under whichever role the restore uses.
pg_dump --format=custom --compress=6 --no-owner --no-acl --file "$tmp" --dbname "$DATABASE_URL"
mv "$tmp" "$dir/$name"
(cd "$dir" && sha256sum "$name" > "$name.sha256")
echo "$dir/$name"
