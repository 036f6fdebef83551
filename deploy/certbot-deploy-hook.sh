#!/bin/sh
# certbot --deploy-hook: after each issue or renewal, copy the certificate to where nginx and
# coturn read it, readable by coturn's group, and make them load it.
#
#   certbot certonly --webroot -w /srv/conference/deploy/acme -d meet.example.org \
#       --deploy-hook /srv/conference/deploy/certbot-deploy-hook.sh
#
# Docker (deploy/compose.yaml running): into deploy/certs (or $CERTS_DIR), group 65534 (nogroup,
# the coturn image's user), then nginx reloads and coturn restarts. Bare metal: set CERTS_DIR
# (/etc/nginx/certs) and CERTS_GROUP (turnserver) in the hook's environment, or edit the
# defaults below; nginx reloads and coturn restarts through systemctl.
# Restarting coturn ends the TURN allocations in use: relayed calls reconnect on their own.
set -eu

: "${RENEWED_LINEAGE:?run this from certbot as --deploy-hook}"

deploy_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
certs_dir=${CERTS_DIR:-$deploy_dir/certs}
certs_group=${CERTS_GROUP:-65534}
compose="docker compose -f $deploy_dir/compose.yaml"

install -d -m 0755 "$certs_dir"
install -m 0644 "$RENEWED_LINEAGE/fullchain.pem" "$certs_dir/fullchain.pem.new"
install -m 0640 -g "$certs_group" "$RENEWED_LINEAGE/privkey.pem" "$certs_dir/privkey.pem.new"
mv -f "$certs_dir/fullchain.pem.new" "$certs_dir/fullchain.pem"
mv -f "$certs_dir/privkey.pem.new" "$certs_dir/privkey.pem"

if command -v docker >/dev/null 2>&1 && [ -n "$($compose ps --quiet nginx 2>/dev/null)" ]; then
    $compose exec -T nginx nginx -s reload
    $compose restart coturn
else
    systemctl reload nginx
    systemctl try-restart coturn
fi
echo "certificate from $RENEWED_LINEAGE installed in $certs_dir"
