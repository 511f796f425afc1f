# The homeserver image: build with the committed offline query cache, run on Debian slim.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release -p poststelle-server --bin poststelle

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/poststelle --create-home poststelle
COPY --from=build /src/target/release/poststelle /usr/local/bin/poststelle
USER poststelle
WORKDIR /var/lib/poststelle
ENV POSTSTELLE_DATA_DIR=/var/lib/poststelle/data
EXPOSE 8008 8448
ENTRYPOINT ["poststelle"]
CMD ["serve"]
