# tributary-cli: the `tributary` tool (topics, configs, console-producer, console-consumer,
# cluster describe, perf tests), built by `cargo xtask docker-build` from its own context
# (target/docker/tributary-cli/). FROM scratch, statically linked, non-root.
#   docker run --rm --network deploy_tributary tributary-cli:dev topics --bootstrap-server broker-1:19092 --list
# (deploy_tributary: the network of deploy/docker-compose.yml, whose project is named after its
# directory unless -p says otherwise)
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="tributary-cli" \
      org.opencontainers.image.description="Tributary's command-line tools" \
      org.opencontainers.image.version="${VERSION}"
COPY etc/passwd etc/group /etc/
COPY tributary /usr/local/bin/tributary
COPY --chown=10001:10001 data /home/tributary
USER 10001:10001
WORKDIR /home/tributary
ENTRYPOINT ["/usr/local/bin/tributary"]
