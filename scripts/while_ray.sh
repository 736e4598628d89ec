#!/usr/bin/env bash
# Tie a node's own processes to Ray's life on it (used by cluster-local.yaml's start commands).
#
#   while_ray.sh CMD ARGS...            run CMD while this node's raylet runs; end CMD (its
#                                       whole process group) once the raylet is gone
#   while_ray.sh --head HOST:PORT       on a worker: once the raylet is gone, or the head's
#                                       GCS at HOST:PORT has refused 3 checks in a row,
#                                       `ray stop` here
#
# Why: with the `local` provider, `ray down` runs `ray stop` on the head only. A worker's
# raylet exits about a minute after its head is gone, but leaves Ray's log monitor running,
# and a tracking server started beside Ray on the head outlives `ray stop`: on machines
# that stay on after `ray down`, nothing else would end them. Start it in the background
# (nohup ... &); it exits once it has acted.
set -u
head=""
if [ "${1:-}" = --head ]; then
    head=$2
    shift 2
fi
every=${WHILE_RAY_EVERY_S:-2}

raylet_up() { pgrep -x raylet >/dev/null; }
head_answers() {
    [ -z "$head" ] && return 0
    timeout 3 bash -c "exec 3<>/dev/tcp/${head%:*}/${head##*:}" 2>/dev/null
}

# the raylet may still be starting: wait for it up to a minute before watching
for _ in $(seq 1 30); do raylet_up && break; sleep 2; done

child=""
if [ $# -gt 0 ]; then
    setsid "$@" &
    child=$!
fi

missed=0
while raylet_up; do
    if head_answers; then missed=0; else missed=$((missed + 1)); fi
    [ $missed -ge 3 ] && break
    [ -n "$child" ] && ! kill -0 "$child" 2>/dev/null && exit 0   # CMD ended on its own
    sleep "$every"
done

if [ -n "$child" ]; then
    echo "while_ray: Ray stopped on this node; ending $1 (pid $child)"
    kill -TERM -- "-$child" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$child" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$child" 2>/dev/null
fi
if [ -n "$head" ]; then
    echo "while_ray: the raylet is gone or the head $head stopped answering; ray stop"
    ray stop --force >/dev/null 2>&1
fi
exit 0
