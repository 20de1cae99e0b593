# launcher-gateway, FROM scratch: the static binary, Debian's busybox-static, CA certificates
# and a small user database (server-user launcher and admin group rstudio-server). Built by
# deploy/build-images.sh, which stages the build context; nothing is pulled.
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "sh", "/setup.sh"]
COPY launcher-gateway /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    RSTUDIO_CONFIG_DIR=/etc/rstudio
# The Launcher HTTP API.
EXPOSE 5559
# Our own probe: GET /status on the configured port, plain or TLS (busybox wget has no TLS).
HEALTHCHECK --interval=5s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/launcher-gateway", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/launcher-gateway"]
