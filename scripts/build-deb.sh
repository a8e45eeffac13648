#!/usr/bin/env bash
# make deb: a Debian package of tusk, built from this tree into build-deb/ (Release, prefix /usr).
# The package installs /usr/bin/tusk, the man page, libtuskpool, the docs, the systemd unit at
# /usr/lib/systemd/system/tusk.service (not enabled: the operator writes /etc/tusk/tusk.yaml
# first), the example configuration as /etc/tusk/tusk.yaml (a conffile, mode 0640 root:tusk) and a
# `tusk` system user. libpq, libmicrohttpd, libldap and libpam are opened with dlopen, so dpkg-shlibdeps
# cannot see them: they are named as dependencies here.
# Usage: scripts/build-deb.sh [OUTDIR]   (prints the .deb's path last)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/build-deb}
build=$root/build-deb/cmake
stage=$root/build-deb/root
jobs=$(nproc 2>/dev/null || echo 2)

for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture; do
	command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (apt-get install dpkg-dev)" >&2; exit 1; }
done

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DTUSK_TESTS=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target tusk tuskpool tuskpool_static >/dev/null
rm -rf "$stage"
DESTDIR=$stage cmake --install "$build" >/dev/null
strip --strip-unneeded "$stage/usr/bin/tusk"

version=$(sed -n 's/^project(tusk VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$version" ] || { echo "build-deb: no version in CMakeLists.txt" >&2; exit 1; }
debversion=$version-1
arch=$(dpkg-architecture -qDEB_HOST_ARCH)

install -d -m 0755 "$stage/etc/tusk" "$stage/DEBIAN"
install -m 0640 "$root/tusk.yaml.example" "$stage/etc/tusk/tusk.yaml"
gzip -9n "$stage/usr/share/man/man1/tusk.1"

# Shared-library dependencies of what is linked (libev, libyaml, OpenSSL, c-ares, hiredis,
# libpg_query, xxhash ...), then the two opened at run time.
shl=$(mktemp -d)
trap 'rm -rf "$shl"' EXIT
mkdir -p "$shl/debian"
printf 'Source: tusk\n\nPackage: tusk\nArchitecture: any\n' >"$shl/debian/control"
linked=$(cd "$shl" && dpkg-shlibdeps -O --ignore-missing-info \
	"$stage/usr/bin/tusk" "$stage"/usr/lib/*/libtuskpool.so.* 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
depends="$linked, libpq5, libmicrohttpd12, libldap-2.5-0, libpam0g, adduser" # libldap: src/auth/ldapauth.c's LDAP_LIBRARY; libpam0g: pamauth.c's

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
	-e "s/@SIZE@/$installed_size/" "$root/packaging/deb/control.in" >"$stage/DEBIAN/control"
install -m 0644 "$root/packaging/deb/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$root/packaging/deb/postinst" "$root/packaging/deb/postrm" "$stage/DEBIAN/"

mkdir -p "$out"
deb=$out/tusk_${debversion}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
