#!/usr/bin/env bash
# Makes sure a Docker engine runs on this machine and holds the local test image the container
# tests use (aiflow-test/debian:bookworm), built from Debian packages with no registry at all.
#
# - `dockerd` missing: installs Debian's `docker.io` with apt (the `docker` command alone is only a
#   client).
# - `dockerd` not answering: starts it as root in the background (log: /var/log/aiflow-dockerd.log)
#   and waits for its socket.
# - The image missing: debootstrap --variant=minbase into a folder, tar it once into
#   /var/tmp/aiflow-ci-docker/debian-bookworm.tar (kept between runs) and `docker import` it.
#   An existing image is left alone, so a warm run costs a second.
#
# Never fails the CI run: when no engine can be had it says so loudly, and the container tests skip.
set -u

IMAGE="${AIFLOW_TEST_IMAGE:-aiflow-test/debian:bookworm}"
CACHE_DIR="${AIFLOW_DOCKER_CACHE:-/var/tmp/aiflow-ci-docker}"
ROOTFS_TAR="$CACHE_DIR/debian-bookworm.tar"
SOCK="/var/run/docker.sock"

warn() { echo "ci: WARNING: $*; the container tests will be SKIPPED" >&2; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

if [ -n "${DOCKER_HOST:-}" ] && engine_up; then
  echo "ci: Docker engine at DOCKER_HOST=$DOCKER_HOST is up"
elif engine_up; then
  echo "ci: Docker engine is up"
else
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "ci: dockerd is missing; installing Debian's docker.io"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      docker.io iptables >/dev/null \
      || { as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends docker.io iptables >/dev/null; } \
      || { warn "docker.io could not be installed"; exit 0; }
  fi
  if ! engine_up; then
    echo "ci: starting dockerd (log: /var/log/aiflow-dockerd.log)"
    as_root sh -c "nohup dockerd --host unix://$SOCK >/var/log/aiflow-dockerd.log 2>&1 &" \
      || { warn "dockerd could not be started"; exit 0; }
    for _ in $(seq 1 60); do engine_up && break; sleep 0.5; done
  fi
  if ! engine_up; then
    warn "dockerd did not answer within 30 s (see /var/log/aiflow-dockerd.log)"
    exit 0
  fi
  echo "ci: Docker engine is up ($(docker version --format '{{.Server.Version}}'))"
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "ci: test image $IMAGE is present"
  exit 0
fi

mkdir -p "$CACHE_DIR"
if [ ! -s "$ROOTFS_TAR" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "ci: installing debootstrap"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null \
      || { warn "debootstrap could not be installed, so $IMAGE cannot be built"; exit 0; }
  fi
  rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  echo "ci: building a Debian bookworm root filesystem (debootstrap --variant=minbase)"
  if ! as_root debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    >"$CACHE_DIR/debootstrap.log" 2>&1; then
    as_root rm -rf "$rootfs"
    warn "debootstrap failed (see $CACHE_DIR/debootstrap.log), so $IMAGE cannot be built"
    exit 0
  fi
  # Package lists and caches only make the image larger.
  as_root rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  as_root tar -C "$rootfs" -c . >"$ROOTFS_TAR.part" && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  as_root rm -rf "$rootfs"
fi

echo "ci: importing $ROOTFS_TAR as $IMAGE"
docker import --change 'CMD ["/bin/sh"]' - "$IMAGE" <"$ROOTFS_TAR" >/dev/null \
  || { warn "docker import of $IMAGE failed"; exit 0; }
echo "ci: test image $IMAGE is ready"
exit 0
