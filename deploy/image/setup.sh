# Runs once at image build time under busybox sh (there is no other shell in the image).
set -eu
/bin/busybox --install -s /bin
mkdir -p /root /tmp /var/tmp /home/alice /home/bob /etc/rstudio /var/lib/rstudio-launcher/scratch
chmod 0700 /root
chmod 1777 /tmp /var/tmp
chown 2001:2001 /home/alice
chown 2002:2002 /home/bob
chmod 0750 /home/alice /home/bob
# Jobs run as their users and must reach their output and TMPDIR under the scratch path.
chmod 0711 /var/lib/rstudio-launcher /var/lib/rstudio-launcher/scratch
chmod 0755 /etc/rstudio
chmod 0644 /etc/passwd /etc/group /etc/nsswitch.conf
rm -f /setup.sh
