# Beacon container image.
#
# No image can be pulled on our build machines, so this image is built FROM
# scratch around the static binary that `make build` produces (CGO disabled);
# `make image` builds both. The build context is the repository root, and
# .dockerignore lets through only the files copied below.
#
#   bin/beacon                  the static binary
#   dist/ca-certificates.crt    the build host's CA bundle (HTTPS health checks)
#   dist/data/                  an empty directory: /data, owned by the user below,
#                               so that a fresh named volume mounted there is writable
FROM scratch

COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chown=65532:65532 dist/data/ /data/
COPY bin/beacon /beacon

# Not root: 65532 is the conventional "nonroot" user of distroless images.
USER 65532:65532

# HTTP API, cluster (Raft and RPC), gossip (TCP and UDP), DNS (TCP and UDP,
# when --dns-addr turns it on, as docker-compose.yml does), load balancer and
# its admin port.
EXPOSE 8750 8751 8752 8752/udp 8753 8753/udp 8080 8081

# No VOLUME for /data: docker-compose.yml mounts a named volume there for each
# agent, and `docker run -v NAME:/data` does the same (the empty, owned /data
# above is copied into a new volume, so it is writable). A VOLUME gave every
# other container (load balancers, demo instances) an anonymous volume that
# Compose carries over by name when it recreates a container, after which
# `docker-compose down --volumes` no longer removes it: `make down` left them
# behind.

# The binary is its own health check (there is no shell in this image, so
# the exec form): exit 0 when the agent's /readyz says it has a recent
# leader. Containers running `beacon lb` or `beacon demo` override it.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/beacon", "health", "--addr", "127.0.0.1:8750"]

# The default command is a server waiting for its peers (docker-compose.yml
# adds --bootstrap-expect and --join). One node on its own (docs/compose.md):
#   docker run -p 127.0.0.1:8500:8750 beacon:local agent --dev --http-addr 0.0.0.0:8750
ENTRYPOINT ["/beacon"]
CMD ["agent", "--data-dir", "/data", "--http-addr", "0.0.0.0:8750"]
