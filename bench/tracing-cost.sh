#!/usr/bin/env bash
# The cost of the tracing hooks with tracing off, against a build with no instrumentation in the
# message path (cpudriver compiled with MULTIKERNEL_NO_TRACING), measured in one session:
# `multikernel bench endpoint` from both builds, interleaved, then the ratios.
#   bash bench/tracing-cost.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dotnet publish apps/Multikernel.Cli -c Release -o "$work/traced" -v quiet -nologo >/dev/null
# A second copy of the sources, so the two builds share no obj/ folder.
git ls-files -z | xargs -0 -I{} cp --parents {} "$work/" 2>/dev/null || rsync -a --exclude bin --exclude obj ./ "$work/src/"
src="$work"; [ -d "$work/src" ] && src="$work/src"
dotnet publish "$src/apps/Multikernel.Cli" -c Release -o "$work/plain" -p:DefineConstants=MULTIKERNEL_NO_TRACING -v quiet -nologo >/dev/null

for i in $(seq 1 "$rounds"); do
  "$work/traced/multikernel" bench endpoint --tracing off --json "$work/traced-$i.json" >/dev/null 2>&1
  "$work/plain/multikernel" bench endpoint --tracing off --json "$work/plain-$i.json" >/dev/null 2>&1
done

python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def off(kind):
    rows = [next(r for r in json.load(open(f"{work}/{kind}-{i}.json")) if r["tracing"] == "off") for i in range(1, rounds + 1)]
    return statistics.median(r["rtt_ns"] for r in rows), statistics.median(r["msgs_per_s"] for r in rows), max(r["alloc_bytes_per_msg"] for r in rows)
t, p = off("traced"), off("plain")
print("tracing off, endpoint path, medians of", rounds, "interleaved runs")
print(f"  without instrumentation: round trip {p[0]:8.0f} ns  {p[1]/1e6:6.2f} M msgs/s  {p[2]:.3f} B/msg")
print(f"  with hooks, no listener: round trip {t[0]:8.0f} ns  {t[1]/1e6:6.2f} M msgs/s  {t[2]:.3f} B/msg")
print(f"  ratio (hooks / none):    round trip {t[0]/p[0]:8.3f}     throughput {t[1]/p[1]:6.3f}")
PY
