# Roster's container image: built in a Rust image, run as a non-root user in
# a small Debian one. The binary embeds its migrations, templates and SCIM
# schemas; the image adds CA certificates (OpenID providers, SMTP relays,
# webhook receivers over TLS) and curl for the health check.
#
#   docker build -t roster .
#   docker run -p 8080:8080 -v roster-data:/var/lib/roster roster
#
# With no configuration it serves the embedded SQLite database in the
# /var/lib/roster volume; set ROSTER_DATABASE_URL (or _FILE) for PostgreSQL.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY migrations migrations
COPY templates templates
COPY schemas schemas
COPY benches benches
RUN cargo build --release --locked --bin roster \
 && strip target/release/roster

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/roster --create-home roster
COPY --from=build /src/target/release/roster /usr/local/bin/roster
USER 10001:10001
WORKDIR /var/lib/roster
ENV ROSTER_LISTEN=0.0.0.0:8080 \
    ROSTER_DATABASE_URL=sqlite:///var/lib/roster/roster.db?mode=rwc \
    ROSTER_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/roster"]
# Liveness only: readiness (the database answers) is /readyz, for load balancers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz > /dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/roster"]
CMD ["serve"]
