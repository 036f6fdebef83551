#!/bin/sh
# Starts coturn (in the coturn/coturn container) with deploy/turnserver.conf plus the values that
# differ per deployment, taken from the environment: the shared secret (the product's TURN_SECRET),
# the realm and the public address. They go into a private copy of the configuration, so the
# secret is on no command line and in no file of the repository.
set -eu

: "${TURN_SECRET:?TURN_SECRET must be set (the same value as the product's TURN_SECRET)}"
: "${TURN_REALM:?TURN_REALM must be set (e.g. the site's host name)}"

conf="${TMPDIR:-/tmp}/turnserver.conf"
umask 077
{
    cat /etc/coturn/turnserver.conf
    echo
    echo "# From the environment (deploy/coturn-entrypoint.sh):"
    printf 'static-auth-secret=%s\n' "$TURN_SECRET"
    printf 'realm=%s\n' "$TURN_REALM"
    if [ -n "${PUBLIC_IPV4:-}" ] && [ -n "${PRIVATE_IPV4:-}" ]; then
        # Behind 1:1 NAT: the relay addresses coturn hands out are the public one.
        printf 'external-ip=%s/%s\n' "$PUBLIC_IPV4" "$PRIVATE_IPV4"
    elif [ -n "${PUBLIC_IPV4:-}" ]; then
        printf 'external-ip=%s\n' "$PUBLIC_IPV4"
    fi
} >"$conf"

exec turnserver -c "$conf" "$@"
