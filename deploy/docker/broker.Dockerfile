# tributary-broker, built by `cargo xtask docker-build` from its own context
# (target/docker/tributary-broker/: the static binary, etc/passwd, etc/group and an empty
# data/). FROM scratch: nothing is pulled and there is no shell; the binary is statically linked
# (glibc +crt-static, name resolution included).
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="tributary-broker" \
      org.opencontainers.image.description="Tributary's broker: partition logs served over gRPC" \
      org.opencontainers.image.version="${VERSION}"
COPY etc/passwd etc/group /etc/
COPY tributary-broker /usr/local/bin/tributary-broker
# The data directory (partition logs), owned by the user the node runs as (uid 10001,
# `tributary`). A named volume mounted here starts as a copy of it, ownership included.
COPY --chown=10001:10001 data /var/lib/tributary
USER 10001:10001
WORKDIR /var/lib/tributary
# Configuration: flags, `--config FILE`, or TRIBUTARY_* variables (TRIBUTARY_BROKER_ID,
# TRIBUTARY_COORDINATORS, TRIBUTARY_LISTENERS, TRIBUTARY_ADVERTISED_LISTENERS,
# TRIBUTARY_INTER_BROKER_LISTENER_NAME, TRIBUTARY_METRICS_LISTEN, ...). Without listeners it
# binds 0.0.0.0:9092 (PLAINTEXT).
ENV TRIBUTARY_DATA_DIR=/var/lib/tributary
VOLUME ["/var/lib/tributary"]
# gRPC (clients, replication, admin, grpc.health.v1) and Prometheus /metrics (when
# TRIBUTARY_METRICS_LISTEN=0.0.0.0:10092). Listeners may add ports (e.g. INTERNAL 19092).
EXPOSE 9092 10092
# Checks the default listener; a deployment with other listeners overrides it (the Compose
# file checks INTERNAL on 19092).
HEALTHCHECK --interval=5s --timeout=6s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/tributary-broker", "healthcheck", "127.0.0.1:9092"]
# SIGTERM starts a controlled shutdown (leaderships move away first, bounded by
# controlled_shutdown_timeout_ms, 30 s): give `docker stop` more than that (-t 45).
ENTRYPOINT ["/usr/local/bin/tributary-broker"]
