#!/usr/bin/env bash
# Installs the Debian 12 packages tusk needs to build, test, fuzz and benchmark.
# Fast when everything is present (one dpkg-query); apt-get runs only for what is missing.
# As root it installs; otherwise it prints the sudo line and fails, so nobody builds half-equipped.
set -euo pipefail

PACKAGES=(
	# build
	cmake make gcc clang pkg-config libev-dev libyaml-dev libssl-dev libcmocka-dev libxxhash-dev
	libpg-query-dev # the real PostgreSQL parser, for classifying session statements
	libmicrohttpd-dev # the admin.http endpoint (/metrics, /health)
	libpq-dev # the key-value store's init, push and replication (src/kv/)
	libhiredis-dev # the result cache's L2 on Redis (src/flight/l2.c)
	libc-ares-dev # DNS (A/AAAA/SRV) of services off the workers' loops (src/resolve/)
	libldap-dev # LDAP client authentication (src/auth/ldapauth.c)
	libpam0g-dev # PAM client authentication's header (src/auth/pamauth.c; libpam itself is opened
	# with dlopen); pam_exec.so (libpam-modules, always installed) drives test_pam_auth.py
	libclang-rt-14-dev # ASan/UBSan/libFuzzer runtimes for clang
	systemtap-sdt-dev # <sys/sdt.h>: USDT probes (optional: a build without it has none)
	# integration tests and bench
	postgresql-15 postgresql-client-15 pgbouncer python3 python3-psycopg python3-pytest python3-pytest-timeout
	python3-pytest-xdist # make test runs the integration suite in two processes (tests/integration/conftest.py)
	procps iproute2 util-linux
	strace # tests/integration/test_cost.py counts tusk's reads and writes per transaction
	tmux # tests/integration/test_top.py drives `tusk top` in a real terminal
	redis-server # test_cache_l2 and bench/cache.sh start their own on a free port
	python3-dnspython # the authoritative DNS server the resolver tests run (tests/integration/dns_util.py)
	python3-redis # test_kv_resp.py and bench/kv_speed.py talk to the kv's Redis listener as a Redis client would
	python3-yaml # test_kv_resp.py and bench/kv_speed.py read the kv fixture's tusk.yaml
	slapd ldap-utils # test_ldap_auth.py starts its own slapd on a free port (tests/integration/ldap_util.py)
	openssl # the TLS tests and bench make their CA and certificates with the openssl command
	# real drivers (tests/integration/test_drivers.py, bench/drivers.sh)
	python3-asyncpg
	libpostgresql-jdbc-java # pgjdbc, /usr/share/java/postgresql.jar
	openjdk-17-jdk-headless # java runs DriverSuite.java from source: that needs the JDK's compiler
	dpkg-dev fakeroot adduser # make deb (scripts/build-deb.sh) and its install test (test_packaging.py)
	autoconf automake libtool libevent-dev # bench/lib.sh builds PgBouncer 1.25 (../shared/peers) to compare with
	nodejs # node-postgres itself comes from npm at pinned versions (tests/drivers/node/install.sh)
)
# Debian's nodejs has no npm in it (its npm package has); NodeSource's nodejs bundles npm and
# conflicts with Debian's. Ask for Debian's only where no npm is found.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

# node-postgres at the versions tests/drivers/node/package-lock.json pins (a no-op when current).
# Without the npm registry the node driver tests fail and say so; nothing else needs it.
node_modules() {
	if ! tests/drivers/node/install.sh; then
		echo "install-deps: npm ci in tests/drivers/node failed: the node-postgres tests will fail" >&2
	fi
}
cd "$(dirname "$0")/.."

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
	node_modules
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}" >&2
	echo "install-deps: run: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql-common would create and start a "main" cluster on 5432; tests and bench run
# their own throwaway servers on free ports, so stop it from being created in the first place.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/tusk-no-main.conf
# slapd would ask for an admin password and a domain, make a directory and start a server on
# port 389; the tests run their own from a config file of theirs. Answer "omit the server
# configuration" up front: the package installs its binaries and nothing runs.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
node_modules
