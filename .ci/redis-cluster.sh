#!/usr/bin/env bash
# Start (or reuse) a three-primary Redis Cluster on 127.0.0.1:7001-7003 for the fastshard-redis
# cluster tests. CI runs it; developers can too. Data is not persisted (test use only).
set -euo pipefail
PORTS=(7001 7002 7003)
DIR=${FASTSHARD_REDIS_CLUSTER_DIR:-/tmp/fastshard-redis-cluster}

state() { redis-cli -p "${PORTS[0]}" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }

if [ "$(state)" = "ok" ]; then echo "redis cluster is up on ${PORTS[*]}"; exit 0; fi
command -v redis-server >/dev/null || { echo "redis-cluster: redis-server is not installed" >&2; exit 1; }
mkdir -p "$DIR"
for p in "${PORTS[@]}"; do
  if ! redis-cli -p "$p" ping >/dev/null 2>&1; then
    rm -f "$DIR/nodes-$p.conf"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$DIR/nodes-$p.conf" \
      --cluster-node-timeout 5000 --save "" --appendonly no --dir "$DIR" --daemonize yes --logfile "$DIR/$p.log"
  fi
done
for _ in $(seq 1 50); do
  all=1; for p in "${PORTS[@]}"; do redis-cli -p "$p" ping >/dev/null 2>&1 || all=0; done
  [ $all = 1 ] && break; sleep 0.1
done
# A node that kept an old config but lost its peers: start the whole cluster afresh.
if [ "$(redis-cli -p "${PORTS[0]}" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')" != "${#PORTS[@]}" ]; then
  for p in "${PORTS[@]}"; do redis-cli -p "$p" flushall >/dev/null; redis-cli -p "$p" cluster reset hard >/dev/null; done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
fi
for _ in $(seq 1 100); do
  if [ "$(state)" = "ok" ]; then echo "redis cluster is up on ${PORTS[*]}"; exit 0; fi
  sleep 0.1
done
echo "redis-cluster: cluster_state did not become ok" >&2; exit 1
