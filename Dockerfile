# syntax=docker/dockerfile:1
FROM rust:1-bookworm AS build
WORKDIR /src
# Everything the manifest names (src, sql, docs, tests); .dockerignore keeps target/ out.
COPY . .
RUN cargo build --release --locked --bin postbox

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home postbox
COPY --from=build /src/target/release/postbox /usr/local/bin/postbox
COPY sql /usr/share/postbox/sql
USER postbox
ENTRYPOINT ["postbox"]
CMD ["run"]
