#!/usr/bin/env bash
# The deployment's secrets, as commands an operator runs (not a Job in the
# cluster; docs/scaling.md says why): `ticketctl secrets DIR` makes every
# key once on this machine, into DIR, keeping what DIR already holds, and
# each service's share becomes a Kubernetes Secret of its own, created or
# updated from the files (the values go through a pipe, never argv):
#
#   <service>-keys      admin-key, pass-public-key, member-jwks.json,
#                       and the queue's pass-signing-key
#   console-keys        admin-key (the saga console signs operators in with it)
#   <service>-db-app    --single-node only: `uri`, the service's database
#                       URL (in production CloudNativePG makes this Secret)
#   postgres            --single-node only: the superuser's and the five
#                       roles' passwords, for the server and postgres-roles
#
# usage: deploy/k8s/secrets.sh [--single-node] DIR
#   DIR       where the secrets are kept (mode 0600): keep it as safely as
#             the cluster's Secrets; it is also the data folder that
#             `ticketctl login --data-dir DIR` signs member tokens with.
#   TICKETCTL the ticketctl to run (default: ticketctl on PATH, e.g. from
#             `cargo install --path tools/ticketctl`).
#   KUBECTL, NAMESPACE  default kubectl and ticketing.
set -euo pipefail

single_node=false
if [ "${1:-}" = "--single-node" ]; then
  single_node=true
  shift
fi
if [ $# -ne 1 ]; then
  awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
dir=$1
kubectl=${KUBECTL:-kubectl}
namespace=${NAMESPACE:-ticketing}
ticketctl=${TICKETCTL:-ticketctl}

# The single-node server's Service is `postgres`; production's URLs are
# CloudNativePG's, and the ones made here are not used.
"$ticketctl" secrets "$dir" --database-host postgres:5432

"$kubectl" create namespace "$namespace" --dry-run=client -o yaml | "$kubectl" apply -f -

secret() {
  local name=$1
  shift
  "$kubectl" --namespace "$namespace" create secret generic "$name" "$@" --dry-run=client -o yaml \
    | "$kubectl" --namespace "$namespace" apply -f -
}

for service in concert queue reservation member-balance payment; do
  share=$dir/$service
  keys=(
    --from-file=admin-key="$share/admin-key"
    --from-file=pass-public-key="$share/pass-public-key"
    --from-file=member-jwks.json="$share/member-jwks.json"
  )
  if [ "$service" = queue ]; then
    keys+=(--from-file=pass-signing-key="$share/pass-signing-key")
  fi
  secret "$service-keys" "${keys[@]}"
  if $single_node; then
    secret "$service-db-app" --from-file=uri="$share/database-url"
  fi
done
secret console-keys --from-file=admin-key="$dir/console/admin-key"
if $single_node; then
  # postgres-password and ticketing_<service>.password, one key each.
  secret postgres --from-file="$dir/postgres"
fi
echo "secrets in namespace $namespace; the admin key is $dir/admin-key"
