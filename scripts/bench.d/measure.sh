# scripts/bench.d/measure.sh: phase accounting shared by gitmodel.sh and peer_next.sh,
# with the conventions of ../shared/bench/peer_gitlfs.sh. Sourced, not run.
#
# Needs SCRATCH (where per-command timings go), MEASURE_RSS_LOG (the file the tool's
# /usr/bin/time shim appends "RSS <kB>" lines to) and, when there is a server,
# SERVER_PID. Every command of a phase runs under `tcmd` (max RSS, user+sys CPU of its
# whole process tree); system-wide busy CPU (/proc/stat) and the server's CPU
# (/proc/PID/stat) are sampled around the phase, so OTHER_CPU_S = CPU burnt by processes
# outside the benchmark during the phase (noise; ~0 on a quiet machine).
now() { date +%s.%N; }
dub() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END{printf "%.0f\n", s}'; }
duk() { du -sk "$@" 2>/dev/null | awk '{s+=$1} END{printf "%.0f\n", s*1024}'; }
cpu_busy() { awk '/^cpu /{printf "%.0f\n", $2+$3+$4+$7+$8+$9}' /proc/stat; }
srv_cpu() {
  if [ -n "${SERVER_PID:-}" ]; then awk '{printf "%.0f\n", $14+$15}' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0
  else echo 0; fi
}
srv_rss() {
  if [ -n "${SERVER_PID:-}" ]; then awk '/VmHWM/{print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0
  else echo 0; fi
}
# max RSS (kB) the tool's shim logged in this phase
shim_rss() { awk '/^RSS/{if($2>m)m=$2} END{print m+0}' "$MEASURE_RSS_LOG"; }
TN=0
tcmd() { TN=$((TN + 1)); /usr/bin/time -o "$SCRATCH/t.$TN" -f '%M %U %S' "$@" >&2; }  # stdout is for JSON only
phase_begin() { : > "$MEASURE_RSS_LOG"; rm -f "$SCRATCH"/t.*; TN=0; C0=$(cpu_busy); S0=$(srv_cpu); T0=$(now); }
phase_end() {
  local t1 c1 s1
  t1=$(now); c1=$(cpu_busy); s1=$(srv_cpu)
  WALL=$(awk -v a="$T0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
  read -r TRSS CPU_S < <(tail -qn1 "$SCRATCH"/t.* | awk '{if($1>m)m=$1; c+=$2+$3} END{printf "%d %.2f\n", m, c}')
  SRV_CPU_S=$(awk -v a="$S0" -v b="$s1" 'BEGIN{printf "%.2f", (b-a)/100}')
  OTHER_CPU_S=$(awk -v a="$C0" -v b="$c1" -v t="$CPU_S" -v s="$SRV_CPU_S" 'BEGIN{printf "%.2f", (b-a)/100-t-s}')
  LOAD1=$(cut -d' ' -f1 /proc/loadavg)
}
