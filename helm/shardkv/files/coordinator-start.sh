#!/bin/sh
# Start one member of the coordinators' Raft group (rendered into the <fullname>-scripts
# ConfigMap). Every member runs the same pod template, so the member-specific flags are derived
# here: the id is the pod name, --raft and --advertise-url use the pod's stable DNS name, and
# --peers is every other entry of SHARDKV_COORDINATOR_MEMBERS ("ID=HOST,...", from the chart).
# Arguments are passed on to `shardkv coordinator`.
set -eu
: "${POD_NAME:?POD_NAME must be set (downward API)}"
: "${SHARDKV_COORDINATOR_MEMBERS:?SHARDKV_COORDINATOR_MEMBERS must be set (chart ConfigMap)}"
: "${SHARDKV_HTTP_PORT:=7000}"
: "${SHARDKV_RAFT_PORT:=7001}"
: "${SHARDKV_DNS_WAIT_SECONDS:=120}"

self_host=""
peers=""
peer_urls=""
old_ifs=$IFS
IFS=','
for member in $SHARDKV_COORDINATOR_MEMBERS; do
  id=${member%%=*}
  host=${member#*=}
  if [ "$id" = "$POD_NAME" ]; then
    self_host=$host
    continue
  fi
  peers="${peers:+$peers,}$id=$host:$SHARDKV_RAFT_PORT"
  peer_urls="${peer_urls:+$peer_urls,}$id=http://$host:$SHARDKV_HTTP_PORT"
done
IFS=$old_ifs

if [ -z "$self_host" ]; then
  echo "coordinator-start: $POD_NAME is not a member ($SHARDKV_COORDINATOR_MEMBERS);" \
       "was coordinators.replicas lowered? Remove a member through the admin API first." >&2
  exit 1
fi

# Raft binds to the pod's own DNS name, which the headless Service publishes a moment after
# the pod gets its address: wait for it rather than crash-looping.
waited=0
until python3 -c 'import socket, sys; socket.getaddrinfo(sys.argv[1], None)' "$self_host" 2>/dev/null; do
  if [ "$waited" -ge "$SHARDKV_DNS_WAIT_SECONDS" ]; then
    echo "coordinator-start: $self_host does not resolve after ${waited}s" >&2
    exit 1
  fi
  sleep 2
  waited=$((waited + 2))
done

set -- --id "$POD_NAME" \
  --listen "0.0.0.0:$SHARDKV_HTTP_PORT" \
  --raft "$self_host:$SHARDKV_RAFT_PORT" \
  --advertise-url "http://$self_host:$SHARDKV_HTTP_PORT" \
  --data-dir /data "$@"
if [ -n "$peers" ]; then
  set -- "$@" --peers "$peers" --peer-urls "$peer_urls"
fi
echo "coordinator-start: $POD_NAME at $self_host, peers: ${peers:-none}" >&2
exec shardkv coordinator "$@"
