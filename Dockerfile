# exact-proxy in a container.
#   docker build -t exact-proxy .
#   docker run -p 127.0.0.1:8080:8080 -v "$PWD/policies.yaml:/config/policies.yaml:ro" \
#              -v exact-proxy-state:/data exact-proxy
# Inside the container the proxy must listen on all interfaces to be reachable through the published
# port; the command below says so explicitly (--host 0.0.0.0). Publish the port on 127.0.0.1 only.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin exactproxy \
 && mkdir -p /config /data && chown exactproxy /data && chmod 700 /data

WORKDIR /opt/exact-proxy
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# with the cluster extra (redis-py): the same image runs alone or as one of several proxies
RUN pip install '.[cluster]'

# The default policy; mount your own over it (read-only is fine: the proxy only reads it).
COPY policies.yaml /config/policies.yaml

USER exactproxy
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/_proxy/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["exact-proxy"]
CMD ["run", "--config", "/config/policies.yaml", "--host", "0.0.0.0", "--state", "/data/exact-proxy.sqlite"]
