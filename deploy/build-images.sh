#!/usr/bin/env bash
# Builds the container images from a clean checkout, pulling nothing:
#   launcher-node:$TAG     launcher-node + launcher-local-plugin
#   launcher-gateway:$TAG  launcher-gateway
# Both are FROM scratch: static glibc binaries built once here (glibc's static libc resolves
# users, groups and hosts itself, in an empty root), Debian's busybox-static, the CA
# certificates and a small /etc/passwd + /etc/group (deploy/image/).
#
#   CARGO_TARGET_DIR     where cargo builds (default: <repo>/target); the static binaries land
#                        in $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
#   LAUNCHER_IMAGE_TAG   tag of both images (default: latest)
#
# Installs busybox-static with apt-get when it is missing. Run again after a change: cargo and
# Docker's layer cache make an unchanged rebuild take seconds.
set -euo pipefail
# The images take their files' modes from the build context.
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${LAUNCHER_IMAGE_TAG:-latest}"
triple=x86_64-unknown-linux-gnu
target_dir="${CARGO_TARGET_DIR:-$here/target}"
bin_dir="$target_dir/$triple/release"

command -v docker >/dev/null || { echo "build-images: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build-images: the Docker daemon does not answer (is it running? may this user use it?)" >&2; exit 1; }

# The package's own file, not a dynamically linked busybox that may also be installed.
busybox=/bin/busybox
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
  echo "build-images: installing Debian's busybox-static ..."
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q busybox-static >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q busybox-static >/dev/null; }
fi
certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$certs" ]; then
  echo "build-images: installing ca-certificates ..."
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q ca-certificates >/dev/null
fi

echo "build-images: building static binaries into $bin_dir ..."
# --target keeps these apart from the ordinary (dynamic) builds in the same target dir, and
# RUSTFLAGS then reach only our binaries, not build scripts or proc macros.
(cd "$here" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$triple" \
    -p launcher-node -p launcher-local-plugin -p launcher-gateway --bins)
# An image FROM scratch has no shared libraries: refuse a binary that needs some.
if command -v readelf >/dev/null; then
  for b in launcher-node launcher-local-plugin launcher-gateway; do
    if LC_ALL=C readelf -d "$bin_dir/$b" | grep -q NEEDED; then
      echo "build-images: $bin_dir/$b is not a static binary" >&2
      exit 1
    fi
  done
fi

# Build contexts: the common root file system plus each image's binaries, in a directory of
# this run's own.
stage="$(mktemp -d "$target_dir/images.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/rootfs/bin" "$stage/rootfs/etc/ssl/certs"
cp "$busybox" "$stage/rootfs/bin/busybox"
cp "$certs" "$stage/rootfs/etc/ssl/certs/ca-certificates.crt"
cp "$here/deploy/image/passwd" "$here/deploy/image/group" "$here/deploy/image/nsswitch.conf" "$stage/rootfs/etc/"
cp "$here/deploy/image/setup.sh" "$stage/rootfs/setup.sh"
for image in node gateway; do
  ctx="$stage/$image"
  mkdir -p "$ctx"
  cp -a "$stage/rootfs" "$ctx/rootfs"
  cp "$here/deploy/$image.Dockerfile" "$ctx/Dockerfile"
done
install -m 0755 "$bin_dir/launcher-node" "$bin_dir/launcher-local-plugin" "$stage/node/"
install -m 0755 "$bin_dir/launcher-gateway" "$stage/gateway/"
install -m 0755 "$here/deploy/image/node-entrypoint.sh" "$stage/node/launcher-node-entrypoint"

revision="$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
for image in node gateway; do
  echo "build-images: docker build launcher-$image:$tag ..."
  old="$(docker image inspect -f '{{.Id}}' "launcher-$image:$tag" 2>/dev/null || true)"
  docker build --quiet --pull=false \
    --label "org.opencontainers.image.title=launcher-$image" \
    --label "org.opencontainers.image.revision=$revision" \
    -t "launcher-$image:$tag" "$stage/$image" >/dev/null
  new="$(docker image inspect -f '{{.Id}}' "launcher-$image:$tag")"
  # The image this tag named before is left untagged: drop it unless a container still uses it.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
done
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "launcher-node:$tag"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "launcher-gateway:$tag"
