# A tusk image built from this tree: the Debian package (make deb) installed on debian:12-slim.
#   docker build -t tusk .
#   docker run -p 6432:6432 -v $PWD/tusk.yaml:/etc/tusk/tusk.yaml:ro tusk
# Your tusk.yaml must listen on 0.0.0.0 (host: "*") to be reachable from outside the container;
# the packaged example listens on 127.0.0.1 only. tusk logs to stderr unless log.target says
# otherwise; SIGTERM drains (docker stop -t 45 gives shutdown_timeout room); SIGHUP reloads.
# Not built by CI (no Docker daemon or registry there); the package inside it is (test_packaging.py).
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make gcc pkg-config libev-dev libyaml-dev \
      libssl-dev libxxhash-dev libpg-query-dev libmicrohttpd-dev libpq-dev libhiredis-dev \
      libc-ares-dev libldap-dev libpam0g-dev systemtap-sdt-dev dpkg-dev file ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN make -C /src deb DEB_OUT=/out

FROM debian:12-slim
COPY --from=build /out/ /tmp/deb/
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/deb/tusk_*.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/deb
USER tusk
EXPOSE 6432
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tusk"]
CMD ["-c", "/etc/tusk/tusk.yaml"]
