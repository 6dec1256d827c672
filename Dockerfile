# pyproxy in a container: the package installed from this tree, run as the user pyproxy, in the
# foreground under tini (PID 1: signals reach pyproxy's master, orphans are reaped).
#
#   docker build -t pyproxy .
#   docker run -d --name pyproxy -p 5060:5060/udp -p 5060:5060/tcp -p 5061:5061/tcp \
#       -v pyproxy:/var/lib/pyproxy pyproxy
#   docker exec pyproxy pyproxyctl add alice 'a long password'
#
# The config is etc/docker/pyproxy.cfg (mount your own over /etc/pyproxy/pyproxy.cfg); the
# TLS certificate it makes at first start and its SQLite database live in the volume.
# tools/docker-smoke builds this image, runs it and checks that it answers.

# The wheel is built where a C compiler is (the full image), so that it holds the SIP parser's
# optional C accelerator; the slim image that runs it has none. Both on the same Debian release
# (the same glibc), and the build fails if the accelerator did not make it (pip only warns).
FROM python:3.12-bookworm AS build
COPY pyproject.toml setup.cfg README.rst LICENSE /src/
COPY tools/pyproxy_build.py /src/tools/
COPY pyproxy/ /src/pyproxy/
COPY etc/ /src/etc/
RUN pip wheel --no-cache-dir --no-deps -w /wheels /src

FROM python:3.12-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "import pyproxy.sip.accel as a; assert a.ENABLED, 'no C accelerator in the wheel'"

RUN useradd --system --user-group --home-dir /var/lib/pyproxy --no-create-home \
        --shell /usr/sbin/nologin pyproxy \
    && mkdir -p /var/lib/pyproxy /run/pyproxy \
    && chown pyproxy:pyproxy /var/lib/pyproxy /run/pyproxy
COPY etc/ /etc/pyproxy/
COPY etc/docker/pyproxy.cfg /etc/pyproxy/pyproxy.cfg

USER pyproxy
VOLUME /var/lib/pyproxy
EXPOSE 5060/udp 5060/tcp 5061/tcp
STOPSIGNAL SIGTERM
# The mi process answers from the running server (mi_socket of the config).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["pyproxyctl", "mi", "-s", "/run/pyproxy/mi.sock", "uptime"]
ENTRYPOINT ["/usr/bin/tini", "--"]
# The systemd unit's ExecStart, logging to standard error (docker logs).
CMD ["/usr/local/bin/pyproxy", "-f", "/etc/pyproxy/pyproxy.cfg", "-m", "128", "-D", "-E"]
