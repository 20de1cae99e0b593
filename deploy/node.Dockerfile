# launcher-node with its Local plugin, FROM scratch: static glibc binaries, Debian's
# busybox-static (a shell for jobs and operators), CA certificates and a small user database
# (server-user launcher; admin group rstudio-server; job users alice and bob). Built by deploy/build-images.sh,
# which stages the build context; nothing is pulled.
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "sh", "/setup.sh"]
COPY launcher-node launcher-local-plugin launcher-node-entrypoint /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    RSTUDIO_CONFIG_DIR=/etc/rstudio
# Raft log, job table, identity (data-dir) and the Local plugin's state (scratch-path).
# Anonymous per container: every replica of a scaled service needs its own.
VOLUME /var/lib/rstudio-launcher
# gRPC: Raft between nodes and the launcher service the gateway calls.
EXPOSE 5560
# Healthy = the node serves and sees a leader. Bootstrap waits for its peers: hence the start period.
HEALTHCHECK --interval=5s --timeout=6s --start-period=120s --retries=3 \
    CMD ["/usr/local/bin/launcher-node", "health"]
STOPSIGNAL SIGTERM
# Sets LAUNCHER_ADVERTISE_ADDRESS to the container's name (see the script), then execs launcher-node.
ENTRYPOINT ["/usr/local/bin/launcher-node-entrypoint"]
