#!/bin/sh
# Rolling upgrade of the node replicas of a compose launcher cluster to the images tagged
# $LAUNCHER_IMAGE_TAG, keeping a quorum and every member's id and volume throughout.
#
#   LAUNCHER_IMAGE_TAG=v0.3.0 deploy/build-images.sh   # the new images, tagged v0.3.0
#   cd deploy && LAUNCHER_IMAGE_TAG=v0.3.0 ./rolling-upgrade.sh
#   LAUNCHER_IMAGE_TAG=v0.3.0 docker-compose up -d --no-deps gateway   # then the gateway
#
# docker-compose re-creates a scaled service's containers at least two at a time, which would
# leave a 3-node cluster without a quorum. So, with N replicas running:
#   1. two replicas of the new image are added; they join and become voters (N+2 voters);
#   2. the N old replicas are re-created from the new image, at most two at a time, each with
#      its name (its Raft address), its volume and so its node id; N of the N+2 voters stay up;
#   3. the service is scaled back to N; the two replicas it stops are removed from the
#      membership at once (through the gateway's API) and their volumes deleted.
# Between steps it waits until the cluster is Green with the expected voters.
#
# Environment: LAUNCHER_IMAGE_TAG (required), the variables of docker-compose.yml, and
# docker-compose's own COMPOSE_PROJECT_NAME / COMPOSE_FILE for a project other than this
# directory's. LAUNCHER_ADMIN_USER (default rstudio-server, a member of the image's admin
# group) is the user whose token removes the members. Needs curl on this host; the gateway
# must publish its port on 127.0.0.1 (as docker-compose.yml does).
set -eu

: "${LAUNCHER_IMAGE_TAG:?set LAUNCHER_IMAGE_TAG to the tag of the new images}"
admin_user="${LAUNCHER_ADMIN_USER:-rstudio-server}"
wait_seconds="${LAUNCHER_UPGRADE_WAIT_SECONDS:-600}"

say() { echo "rolling-upgrade: $*" >&2; }
die() { say "$*"; exit 1; }

for image in launcher-node launcher-gateway; do
  docker image inspect "$image:$LAUNCHER_IMAGE_TAG" >/dev/null 2>&1 ||
    die "no image $image:$LAUNCHER_IMAGE_TAG here: build it first (deploy/build-images.sh)"
done

# Containers of the node service, one id per line.
nodes() { docker-compose ps -q node; }

# The cluster status as one line of JSON, asked of the first running replica.
status_json() {
  for c in $(nodes); do
    if docker exec "$c" launcher-node status --json 2>/dev/null; then return 0; fi
  done
  return 1
}

# "id address" per member, from a status.
members_of() {
  echo "$1" | tr '{' '\n' | while read -r obj; do
    id="$(echo "$obj" | sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p')"
    addr="$(echo "$obj" | sed -n 's/.*"address":"\([^"]*\)".*/\1/p')"
    [ -n "$id" ] && [ -n "$addr" ] && echo "$id $addr"
  done
}

# Waits until the cluster is Green with exactly $1 members, all voters.
wait_green() {
  want="$1"
  deadline=$(( $(date +%s) + wait_seconds ))
  while :; do
    if st="$(status_json)"; then
      members="$(members_of "$st" | wc -l)"
      voters="$(echo "$st" | grep -o '"voter":true' | wc -l)"
      if echo "$st" | grep -q '"status":"Green"' && [ "$members" -eq "$want" ] && [ "$voters" -eq "$want" ]; then
        return 0
      fi
    fi
    [ "$(date +%s)" -lt "$deadline" ] ||
      die "the cluster was not Green with $want voters within ${wait_seconds}s; last status: ${st:-none}"
    sleep 2
  done
}

n="$(nodes | wc -l)"
[ "$n" -ge 1 ] || die "no node replicas run in this project"
wait_green "$n"
say "$n replicas, Green; upgrading them to tag $LAUNCHER_IMAGE_TAG"

say "1/3: adding two replicas of the new image"
docker-compose up -d --no-deps --no-recreate --scale "node=$((n + 2))" node
wait_green "$((n + 2))"

say "2/3: re-creating the $n old replicas from the new image, at most two at a time"
COMPOSE_PARALLEL_LIMIT=2 docker-compose up -d --no-deps --scale "node=$((n + 2))" node
wait_green "$((n + 2))"

say "3/3: scaling back to $n replicas"
before="$(nodes)"
# Volumes by container, read now: the scale-down removes the containers.
volumes_before="$(for c in $before; do
  echo "$c $(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' "$c")"
done)"
docker-compose up -d --no-deps --scale "node=$n" node
after="$(nodes)"
gone_volumes="$(echo "$volumes_before" | while read -r c vols; do
  echo "$after" | grep -q "^$c\$" || echo "$vols"
done)"
running_names="$(for c in $after; do docker inspect -f '{{.Name}}' "$c" | sed 's|^/||'; done)"
port="$(docker-compose port gateway 5559 | sed -n 's/^127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p')"
[ -n "$port" ] || die "the gateway publishes no port on 127.0.0.1: remove the stopped members with launcherctl"
token="$(docker-compose exec -T gateway launcher-gateway token --user "$admin_user" --ttl 10m)"
members_of "$(status_json)" | while read -r id addr; do
  name="${addr%:*}"
  echo "$running_names" | grep -q "^$name\$" && continue
  say "removing member $id ($addr), whose replica was scaled away"
  # Removal is idempotent (the leader's dead-member cleanup may be quicker). Stopping the
  # replicas may have stopped the leader: during the election that follows the gateway answers
  # 503, so that is retried until the deadline.
  deadline=$(( $(date +%s) + wait_seconds ))
  while :; do
    code="$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$port/members/$id" || true)"
    case "$code" in
      2??) break ;;
      502|503|504|000) [ "$(date +%s)" -lt "$deadline" ] || die "could not remove member $id (HTTP $code) within ${wait_seconds}s: remove it with DELETE /members/$id" ;;
      *) die "could not remove member $id (HTTP $code): remove it with DELETE /members/$id" ;;
    esac
    say "member $id: HTTP $code; retrying"
    sleep 1
  done
done
wait_green "$n"
for v in $gone_volumes; do
  docker volume rm "$v" >/dev/null 2>&1 || say "left volume $v (remove it by hand)"
done
say "done: $n replicas of $LAUNCHER_IMAGE_TAG, Green. Now the gateway:"
say "  LAUNCHER_IMAGE_TAG=$LAUNCHER_IMAGE_TAG docker-compose up -d --no-deps gateway"
