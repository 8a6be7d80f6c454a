# delivery-router for production: the package and its dependencies as wheels, run as an
# unprivileged user. PostgreSQL is a separate server (DATABASE_URL); see compose.yaml and the
# README's "Production" section.

FROM python:3.11-slim-bookworm AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY channels ./channels
COPY linesim ./linesim
# Every dependency as a wheel too, so the final image needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/router --create-home router
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels delivery-router \
    && rm -rf /tmp/wheels
COPY config/router.toml /etc/router/router.toml
USER router
WORKDIR /var/lib/router
# Listen on every interface inside the container; the compose file decides what is published.
ENV ROUTER_CONFIG=/etc/router/router.toml \
    ROUTER_HTTP_LISTEN=0.0.0.0:8080 \
    ROUTER_SMTP_INGRESS_LISTEN=0.0.0.0:2525 \
    PYTHONUNBUFFERED=1
EXPOSE 8080 2525
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["router"]
CMD ["serve"]
