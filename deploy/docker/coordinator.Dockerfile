# tributary-coordinator, built by `cargo xtask docker-build` from its own context
# (target/docker/tributary-coordinator/: the static binary, etc/passwd, etc/group and an empty
# data/). FROM scratch: nothing is pulled and there is no shell; the binary is statically linked
# (glibc +crt-static, name resolution included).
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="tributary-coordinator" \
      org.opencontainers.image.description="Tributary's Raft-replicated metadata service and controller" \
      org.opencontainers.image.version="${VERSION}"
COPY etc/passwd etc/group /etc/
COPY tributary-coordinator /usr/local/bin/tributary-coordinator
# The data directory, owned by the user the node runs as (uid 10001, `tributary`). A named
# volume mounted here starts as a copy of it, ownership included.
COPY --chown=10001:10001 data /var/lib/tributary
USER 10001:10001
WORKDIR /var/lib/tributary
# Configuration: flags, `--config FILE`, or TRIBUTARY_* variables (TRIBUTARY_NODE_ID,
# TRIBUTARY_ADVERTISED_ADDRESS, TRIBUTARY_INITIAL_MEMBERS, TRIBUTARY_METRICS_LISTEN, ...).
ENV TRIBUTARY_DATA_DIR=/var/lib/tributary
VOLUME ["/var/lib/tributary"]
# gRPC (clients, brokers, Raft, grpc.health.v1) and Prometheus /metrics (when
# TRIBUTARY_METRICS_LISTEN=0.0.0.0:10191).
EXPOSE 9191 10191
HEALTHCHECK --interval=5s --timeout=6s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/tributary-coordinator", "healthcheck", "127.0.0.1:9191"]
ENTRYPOINT ["/usr/local/bin/tributary-coordinator"]
