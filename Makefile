# Entry points for developers and CI. CMake does the building; this file only sequences.
#   make build   configure + build into build/
#   make run     build, then run tusk (./tusk.yaml, or a throwaway PostgreSQL + generated config)
#   make run-kv  build, then a two-zone demo of the kv store (two PostgreSQL, two tusks; Ctrl-C stops)
#   make test    unit tests (ctest) then the integration suite against build/tusk
#   make asan    ASan+UBSan build into build-asan/
#   make bench   pgbench -S: direct vs PgBouncer vs tusk (compare.sh), then what each costs to run (cost.sh),
#                then resolution of 1,000 SRV records (resolve_srv.py), then read-write-split vs all
#                on the primary over a primary and two standbys (split.sh)
#   make install binary, libtuskpool (static, shared), tuskpool.h, tuskpool.pc, tusk.1, example
#                config; PREFIX (default /usr/local) and DESTDIR honoured
#   make deb     a Debian package (binary, man page, /etc/tusk/tusk.yaml, tusk user, systemd unit)
#   make bench-kv  kv: puts/gets direct vs through tusk and vs plain SQL, counters, replication lag, catch-up
SHELL := /bin/bash
PYTHON := /usr/bin/python3
JOBS ?= 2
TUSK_BIN ?= $(abspath build/tusk)
BENCH_SECONDS ?= 10
# What pytest runs (a file or a node id narrows it: make integration TESTS=tests/integration/test_pool.py)
# and extra arguments for it, e.g. make integration PYTEST_ARGS='-k copy -x'
TESTS ?= tests/integration
PYTEST_ARGS ?=
# The integration suite in TEST_JOBS processes, a test file to each (pytest-xdist); tests marked
# exclusive run alone (tests/integration/conftest.py). PYTEST_PAR= runs it in one process.
# Three on two cores: the suite mostly waits (timeouts, sleeps, servers), the cores were idle
# ~47% of the time even with three (vmstat 5 over whole runs, also under ASan), and three took
# 554 s against two's 655 s (same machine, back to back).
TEST_JOBS ?= 3
PYTEST_PAR ?= $(shell $(PYTHON) -c 'import xdist' 2>/dev/null && echo '-n $(TEST_JOBS) --dist loadfile')
SAN_CC := $(shell command -v clang >/dev/null 2>&1 && echo clang || echo gcc)

.PHONY: all deps build run run-kv test unit integration asan asan-test bench bench-kv clean install deb
PREFIX ?= /usr/local
DESTDIR ?=

all: build

deps:
	@scripts/install-deps.sh

build:
	cmake -S . -B build
	cmake --build build -j$(JOBS)

run: deps build
	scripts/run-dev.sh

run-kv: deps build
	scripts/run-kv.sh

# Runs both suites even when the first fails, then repeats their summary lines last.
test: deps build
	@mkdir -p build/test-logs; \
	echo "=== unit tests (ctest) ==="; \
	(cd build && ctest --output-on-failure -j$(JOBS)) 2>&1 | tee build/test-logs/ctest.log; unit=$${PIPESTATUS[0]}; \
	echo "=== integration tests (pytest, TUSK_BIN=$(TUSK_BIN)) ==="; \
	TUSK_BIN=$(TUSK_BIN) $(PYTHON) -m pytest $(PYTEST_PAR) $(TESTS) $(PYTEST_ARGS) 2>&1 | tee build/test-logs/pytest.log; integ=$${PIPESTATUS[0]}; \
	echo "=== summary ==="; \
	echo -n "unit:        "; (grep -E 'tests passed|No tests were found' build/test-logs/ctest.log || echo "no ctest summary (exit $$unit)") | tail -n1; \
	echo -n "integration: "; (grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$$' build/test-logs/pytest.log || echo "no pytest summary (exit $$integ)") | tail -n1 | sed -E 's/^=+ //; s/ =+$$//'; \
	[ $$unit -eq 0 ] && [ $$integ -eq 0 ]

unit: build
	cd build && ctest --output-on-failure -j$(JOBS)

# The integration suite alone, against any binary: make integration TUSK_BIN=build-asan/tusk
integration:
	TUSK_BIN=$(abspath $(TUSK_BIN)) $(PYTHON) -m pytest $(PYTEST_PAR) $(TESTS) $(PYTEST_ARGS)

asan:
	cmake -S . -B build-asan -DTUSK_SANITIZE=ON -DCMAKE_C_COMPILER=$(SAN_CC) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-asan -j$(JOBS)

asan-test: asan
	$(MAKE) integration TUSK_BIN=$(abspath build-asan/tusk)

# The prefix is configured in (tuskpool.pc names it); DESTDIR only relocates the copy.
install:
	cmake -S . -B build -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	cmake --build build -j$(JOBS)
	DESTDIR=$(DESTDIR) cmake --install build

# A Debian package of this tree (scripts/build-deb.sh): build-deb/tusk_VERSION-1_ARCH.deb, or into DEB_OUT.
DEB_OUT ?= $(abspath build-deb)
deb:
	scripts/build-deb.sh $(DEB_OUT)

bench: deps build
	bench/compare.sh $(BENCH_SECONDS)
	bench/cost.sh
	$(PYTHON) bench/resolve_srv.py
	PYTHON=$(PYTHON) bench/split.sh

bench-kv: deps build
	TUSK_BIN=$(TUSK_BIN) $(PYTHON) bench/kv_lag.py $(BENCH_SECONDS)
	TUSK_BIN=$(TUSK_BIN) $(PYTHON) bench/kv_speed.py $(BENCH_SECONDS)
	bench/cache.sh $(BENCH_SECONDS)

clean:
	rm -rf build build-asan build-fuzz build-deb .run .run-kv .pytest_cache tests/integration/__pycache__
