#!/usr/bin/env bash
# Recipe for the image busybox:local — a static BusyBox with every applet linked
# in /bin, /sbin, /usr/bin and /usr/sbin, plus a tiny web root in /www, so that
#   docker run -p 8080:8080 busybox:local busybox httpd -f -p 8080 -h /www
# serves /www/index.html and `docker run busybox:local sh -c '...'` works.
#
# The binary comes from Debian's busybox-static package, fetched with
# `apt-get download` (nothing is installed on the host).  No registry is used.
#
# The image is imported as TAG-candidate and tagged TAG only once it passed the
# smoke test at the end.
# Called by scripts/services.sh (`up docker`), which skips the build when an
# image with this tag and IMAGE_VERSION already exists.  Bump IMAGE_VERSION
# whenever this recipe (or www/) changes so existing machines rebuild it.
set -euo pipefail

IMAGE_TAG=busybox:local
IMAGE_VERSION=1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# apt-get download runs as the unprivileged _apt user when it can; give it a
# directory it may write to.
chmod 0777 "$tmp"
if ! apt-get download -q busybox-static; then
    if [ "${EXECBROKER_APT_UPDATED:-0}" != 1 ]; then
        apt-get update -q
        apt-get download -q busybox-static
    else
        exit 1
    fi
fi
dpkg-deb -x busybox-static_*.deb pkg
bb=pkg/bin/busybox
[ -x "$bb" ] || { echo "busybox binary not found in busybox-static package" >&2; exit 1; }

root=$tmp/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,www,proc,sys,dev,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
install -m 0755 "$bb" "$root/bin/busybox"
# One symlink per applet, at the place BusyBox itself says it belongs.
"$root/bin/busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    dir=$(dirname "$applet")
    case "$dir" in
        bin) target=busybox ;;
        sbin | usr) target=../bin/busybox ;;
        usr/bin | usr/sbin) target=../../bin/busybox ;;
        *) continue ;;
    esac
    [ -e "$root/$applet" ] || ln -s "$target" "$root/$applet"
done
[ -e "$root/bin/sh" ] || { echo "no sh applet in busybox" >&2; exit 1; }

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
install -m 0644 "$here/www/index.html" "$root/www/index.html"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf rootfs.tar .
docker import \
    --change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
    --change 'WORKDIR /' \
    --change 'EXPOSE 8080' \
    --change 'CMD ["sh"]' \
    --change "LABEL org.execbroker.recipe-version=$IMAGE_VERSION" \
    --change 'LABEL org.opencontainers.image.title="busybox:local (Debian busybox-static)"' \
    --message "built by scripts/images/busybox/build.sh version $IMAGE_VERSION" \
    rootfs.tar "$IMAGE_TAG-candidate"

# Smoke test: the shell works and httpd serves the page.
docker run --rm "$IMAGE_TAG-candidate" sh -c \
    'busybox httpd -p 127.0.0.1:8080 -h /www && wget -qO- http://127.0.0.1:8080/ | grep -q "It works"'
docker tag "$IMAGE_TAG-candidate" "$IMAGE_TAG"
docker rmi "$IMAGE_TAG-candidate" >/dev/null
echo "$IMAGE_TAG: smoke test passed"
