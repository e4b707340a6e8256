#!/usr/bin/env bash
# Side-by-side benchmark of two built trees in one session: rounds alternate
# BEFORE and AFTER (before, after, before, after, ...) so both see the same
# machine, and each run's report lands in OUT/<side>-<round>.md (+ .log).
# Compare ratios (× direct, × nghttpx), not absolute figures: the machine is noisy.
#
#   bench/ab.sh BEFORE_DIR AFTER_DIR OUT ROUNDS [run.js options, e.g. --only hbone]
#
# Each tree must be built (make build); run nothing else on the machine meanwhile.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bench/ab.sh BEFORE_DIR AFTER_DIR OUT ROUNDS [run.js options]" >&2
  exit 2
fi
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); out=$3; rounds=$4; shift 4
mkdir -p "$out"; out=$(cd "$out" && pwd)
for i in $(seq 1 "$rounds"); do
  for side in before after; do
    dir=$before; [ "$side" = after ] && dir=$after
    echo "ab: round $i, $side ($dir)"
    (cd "$dir" && node dist/bench/run.js "$@" --out "$out/$side-$i.md" > "$out/$side-$i.log" 2>&1) \
      || { echo "ab: $side round $i failed, see $out/$side-$i.log" >&2; exit 1; }
  done
done
echo "ab: reports in $out"
