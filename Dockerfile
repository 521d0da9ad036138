# syntax=docker/dockerfile:1
#
# filemirror: build the TypeScript in one stage, run the compiled output with
# production dependencies only in another.
#
#   docker build -t filemirror .
#   docker run --rm -p 8080:8080 -v filemirror-data:/data --stop-timeout 20 \
#     -e AUTH_TOKEN="$(openssl rand -hex 32)" filemirror
#
# The container listens on 0.0.0.0, so it needs AUTH_TOKEN (16+ characters;
# clients send `Authorization: Bearer <token>`, the status page signs in with
# it). Without one it refuses to start (protected mode). To serve without a
# token anyway, on a network you trust, run it with -e ALLOW_UNAUTHENTICATED=true;
# the image never sets that for you.
#
# Node 26 is the Active LTS line (since 2026-10-28); the major is pinned here and
# in both stages alike, so the code is compiled and run by the same Node.
ARG NODE_MAJOR=26

# ---- build: dev dependencies, tsc -> dist/ ----------------------------------
FROM node:${NODE_MAJOR}-bookworm-slim AS build
WORKDIR /app
# The block-crc addon (native/block-crc.c) is compiled by `npm ci` with node-gyp.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first: this layer is reused until package*.json or the addon change.
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund
# Sources (.dockerignore keeps node_modules, dist, data, .git and test output out).
COPY . .
RUN npm run build

# ---- runtime: compiled output + production dependencies, non-root ----------
FROM node:${NODE_MAJOR}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app

# A dedicated user with a numeric id, so `runAsNonRoot` can verify it. The
# application files stay owned by root (read-only to the service); only /data
# belongs to the service.
RUN groupadd --system --gid 10001 filemirror \
 && useradd --system --uid 10001 --gid filemirror --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin filemirror \
 && mkdir -p /data \
 && chown filemirror:filemirror /data

COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY --from=build /app/dist ./dist
# Block checksums' native CRC-32C (AVX-512 folding or SSE 4.2), loaded from build/Release/ (without it: software).
COPY --from=build /app/build/Release/block_crc.node ./build/Release/block_crc.node
# Read at run time relative to dist/routes/ (../../openapi.yaml, ../../public/):
# GET /openapi.yaml and the status page at /.
COPY --from=build /app/openapi.yaml ./openapi.yaml
COPY --from=build /app/public ./public

# HOST: listen on every interface of the container, not only its loopback
# (which is why AUTH_TOKEN must be given at `docker run`: see the top).
# SHUTDOWN_GRACE_MS: finish write-behind within docker's default 10 s stop
# timeout; whatever is left stays in the journal and is replayed on next start.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data \
    LOG_LEVEL=info \
    SHUTDOWN_GRACE_MS=8000

VOLUME /data
EXPOSE 8080
USER 10001:10001

# No curl in slim images: node itself asks /healthz (Node >= 18 has fetch).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Exec form: no shell in between (the base image's entrypoint execs its
# arguments), so node itself receives SIGTERM and stops gracefully: requests in
# flight first, then write-behind.
STOPSIGNAL SIGTERM
# --initial-old-space-size: V8 otherwise sizes its first old-generation limit from what start-up left alive (~22 MB
# here), and a service that starts that way mark-compacts 10-40x as often under PUT 1 MiB (bench/PROFILE.md).
CMD ["node", "--initial-old-space-size=128", "dist/src/server.js"]
