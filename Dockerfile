# snigate container image: build on Debian 12, run on Debian 12 slim with only the runtime
# libraries, as a non-root user that may still bind ports below 1024 (file capability).
#
#   podman build -t snigate .        (or docker build)
#   podman run -d --name snigate -p 2222:2222 -p 443:8443 -v snigate-data:/data \
#     -e SNIGATE_DOMAIN=tunnel.example.com -e SNIGATE_ADVERTISE_PORT=443 snigate
#
# BASE replaces both stages' base image (a local Debian 12 image when there is no registry, as
# in scripts/container-test); empty means debian:bookworm to build and debian:bookworm-slim to
# run. JOBS bounds the compiler's parallelism.
ARG BASE=

FROM ${BASE:-debian:bookworm} AS build
ARG JOBS=2
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      g++ make cmake libssh-dev libboost1.81-dev libspdlog-dev libfmt-dev libssl-dev \
      libtomlplusplus-dev libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
# The image's one default that differs from the binary's, state_dir=/data, is built in rather
# than set with ENV: an environment variable would beat a --config file (flag > environment >
# file > default), so a file could never move the state dir.
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
      -DSNIGATE_DEFAULT_STATE_DIR=/data \
 && cmake --build /build -j"${JOBS}" --target snigate \
 && install -D -m 0755 -s /build/snigate /out/snigate \
 && install -D -m 0755 /src/scripts/snigate-healthcheck /out/snigate-healthcheck \
 && setcap cap_net_bind_service=+ep /out/snigate

FROM ${BASE:-debian:bookworm-slim}
# Only what the binary links (ldd build/snigate): libssh, OpenSSL, spdlog, fmt, toml++.
# The dpkg excludes keep docs, man pages and locales out, as in debian:bookworm-slim.
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' \
      'path-exclude /usr/share/info/*' > /etc/dpkg/dpkg.cfg.d/01-snigate-slim \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libssh-4 libssl3 libspdlog1.10 libfmt9 libtomlplusplus3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin snigate \
 && install -d -m 0700 -o snigate -g snigate /data
COPY --from=build /out/snigate /out/snigate-healthcheck /usr/local/bin/

# Host keys (ssh_host_ed25519_key) and authorized_keys live here: keep it across re-creates.
VOLUME /data
WORKDIR /data
USER snigate
# No ENV and no flags in CMD: the defaults are the binary's own (state_dir /data built in,
# domain localhost, admin 127.0.0.1:9090), the lowest layer, so `-e SNIGATE_...`, a file named
# by SNIGATE_CONFIG and flags after the image name can each change any of them, and
# `podman exec snigate snigate keys list` or `... hostkey` sees the same ones.
# SSH (ssh -p ... -R), public TLS, admin API (loopback only unless SNIGATE_ADMIN_LISTEN and a
# token say otherwise).
EXPOSE 2222 8443 9090
# GET /healthz on the admin listener, with bash's /dev/tcp: the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/snigate-healthcheck"]
# snigate is PID 1 itself: it handles SIGTERM/SIGINT (drain, then exit 0) and SIGHUP (reload
# authorized_keys, reopen the event log) and starts no children, so it needs no init.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/snigate"]
CMD ["serve"]
