# One image for every role: `docker run IMAGE dev|api|router|edge [options]`.
# Options also come from PUSHPLAT_* environment variables (see `pushplat <role> --help`).

# The browser SDK bundle that the demo page on --ws-port loads: a build output, not in git.
FROM node:20-slim AS web
WORKDIR /src/clients/typescript
COPY clients/typescript/package.json clients/typescript/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY clients/typescript/ ./
RUN npm run --silent build:browser

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The SDK ships the generated stubs the server imports, so it is installed first. Every
# dependency comes at the version pinned in constraints.txt, the same pins CI tests with.
COPY constraints.txt /app/
COPY clients/python /app/clients/python
RUN pip install --constraint /app/constraints.txt /app/clients/python
COPY pyproject.toml README.md /app/
COPY pushplat /app/pushplat
COPY --from=web /src/clients/typescript/dist/browser/pushplat.js /src/clients/typescript/dist/browser/pushplat.js.map /app/pushplat/web/static/sdk/
RUN pip install --constraint /app/constraints.txt /app \
    && groupadd --system --gid 10001 pushplat \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin pushplat

# Numeric, so that Kubernetes' runAsNonRoot can check it without resolving a name.
USER 10001:10001
# Listen on all interfaces inside the container; publish only what each role needs.
ENV PUSHPLAT_HOST=0.0.0.0
# 50051 device streams (edge), 50052 Push API (api), 50053 Delivery (edge, internal: routers
# and edges only), 50054 WebSocket devices and the demo page (with --ws-port; on in dev),
# 8081 plaintext health (with --health-port), 9100 metrics.
EXPOSE 50051 50052 50053 50054 8081 9100
ENTRYPOINT ["pushplat"]
CMD ["dev"]
