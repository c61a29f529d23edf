#!/bin/sh
# Write the secret files docker-compose.yml mounts, once:
#
#   deploy/compose-secrets.sh          # into ./.secrets/ (git-ignored, never in a build context)
#   deploy/compose-secrets.sh DIR      # elsewhere; then run compose with ACTORQ_SECRETS_DIR=DIR
#
#   DIR/redis-password   a random Redis password (hex: it goes into a redis:// URL as is)
#   DIR/replay.yaml      the replay's config file (ACTORQ_CONFIG): its store URL with that password
#   DIR/token-learner    random per-role tokens the services check on every call
#   DIR/token-actor      (ACTORQ_TOKEN_LEARNER_FILE, ..._ACTOR_FILE, ..._READER_FILE)
#   DIR/token-reader
#
# An existing redis-password is kept (Redis's AOF volume was made with it); replay.yaml is
# rewritten from it. Existing tokens are kept; delete one to make a new one (then recreate
# the containers that hold it). DIR is private to you (0700); the files are readable by the
# containers' users (0644), which see only their own /run/secrets.
set -eu
dir=${1:-${ACTORQ_SECRETS_DIR:-.secrets}}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
if [ ! -s "$dir/redis-password" ]; then
  od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/redis-password"
  echo "wrote a new Redis password to $dir/redis-password"
fi
password=$(cat "$dir/redis-password")
case "$password" in
  *[!A-Za-z0-9._~-]*) echo "$dir/redis-password: use URL-safe characters only (A-Z a-z 0-9 . _ ~ -)" >&2; exit 1 ;;
esac
printf 'replay:\n  store: redis://:%s@redis:6379/0\n' "$password" > "$dir/replay.yaml"
chmod 644 "$dir/redis-password" "$dir/replay.yaml"
echo "wrote $dir/replay.yaml"
for role in learner actor reader; do
  if [ ! -s "$dir/token-$role" ]; then
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$dir/token-$role"
    echo "wrote a new $role token to $dir/token-$role"
  fi
  chmod 644 "$dir/token-$role"
done
