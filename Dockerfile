# The gseai gateway as a container: `docker build -t gseai .` then
# `docker run -p 8080:8080 -e GSEAI_API_TOKEN=… gseai`.

# ---- build ----
FROM swift:6.2-noble AS build
WORKDIR /build
# Resolve dependencies first, so that source edits reuse this layer.
COPY Package.swift ./
RUN swift package resolve
COPY . .
RUN swift build -c release --product gseai \
    && mkdir -p /staging \
    && cp "$(swift build -c release --show-bin-path)/gseai" /staging/gseai \
    && cp -R "$(swift build -c release --show-bin-path)/gseai_GSEAIGateway.resources" /staging/

# ---- run ----
FROM swift:6.2-noble-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /app --uid 10001 gseai
WORKDIR /app
COPY --from=build /staging/gseai /usr/local/bin/gseai
# The web page, which the gateway finds beside its executable.
COPY --from=build /staging/gseai_GSEAIGateway.resources /usr/local/bin/gseai_GSEAIGateway.resources
USER gseai
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["gseai"]
CMD ["serve", "--host", "0.0.0.0"]
