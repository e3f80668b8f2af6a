#!/usr/bin/env bash
# Failure paths of a real 2-rank run: the hang watchdog names a rank that never arrives, a NaN
# gradient is skipped or aborts the run naming the parameter, bad comm.timeout_s / DST_FAULT /
# output directories fail before training, and 2 ranks talking over TCP (as 2 hosts) train.
# usage: test_fault_tolerance.sh DSTRAIN WORKDIR SOURCE_DIR
set -euo pipefail
DSTRAIN=$1
WORK=$2
SRC=$3
# fail, in_ci, expect_error [--ranks N] EXIT PATTERN COMMAND... (stdout to out.log, stderr to
# err.log; that exit status exactly, "dstrain: error:" lines matching PATTERN, no crash).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"

"$DSTRAIN" synth corpus.txt --docs 400 --seed 9 > /dev/null
ARGS=("$SRC/configs/quickstart.yaml" data.train_path=corpus.txt train.steps=6
  train.eval_every=0 train.eval_batches=1 train.log_every=1 train.micro_batch_size=2
  data.seq_len=32 model.hidden_size=32 model.intermediate_size=64 model.num_hidden_layers=2
  model.num_attention_heads=4 model.num_key_value_heads=2 schedule.warmup_steps=2
  checkpoint.at_end=false train.peak_flops_per_rank=1e9)
MPI=(timeout 120 mpirun -np 2 --oversubscribe --bind-to none)

# --- Hang watchdog: rank 1 sleeps before step 3 for longer than the job's hang guard (the timeout
# in MPI); comm.timeout_s is 3. Only the watchdog ends the job with rank 0's error naming rank 1:
# without it the hang guard kills the job (exit 124).
DST_FAULT="sleep:rank=1,step=3,point=step_begin,seconds=1000" expect_error 1 \
  "^dstrain: error: rank 0: all_reduce(sum) #[0-9]* on 'dp' (rank 0 of 2, world rank 0) did not complete within 3 s (comm.timeout_s); not arrived: rank 1 (world rank 1, host [^,]*, pid [0-9]*, last entered #[0-9]* " \
  "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" comm.timeout_s=3 train.output_dir=watchdog
echo "ok watchdog: names the sleeping rank"
# Point-to-point: pipeline stage 0 waits for stage 1's gradients; the message describes the peer.
DST_FAULT="sleep:rank=1,step=2,point=step_begin,seconds=1000" expect_error 1 \
  "^dstrain: error: rank 0: recv from rank 1 (world rank 1) on 'pp' (rank 0 of 2, world rank 0) did not complete within 2 s (comm.timeout_s); peer rank 1 (world rank 1) on host [^,]*, pid [0-9]*, last entered collective #[0-9]* " \
  "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" parallel.dp=1 parallel.pp=2 comm.timeout_s=2 \
  train.output_dir=watchdog_pp
echo "ok watchdog (pipeline recv): describes the peer"
# --- Non-finite guard, policy skip: the NaN step is skipped on both ranks, training continues.
DST_FAULT="nan:rank=1,step=2,parameter=model.layers.1.mlp.up_proj.weight" \
  "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.nonfinite.policy=skip \
  train.output_dir=nan_skip checkpoint.at_end=true train.prometheus_every=2 > nan_skip.log 2>&1 ||
  { cat nan_skip.log; fail "nan skip run"; }
grep -q "step 2: loss .*first non-finite gradient: model.layers.1.mlp.up_proj.weight; update skipped" nan_skip.log ||
  { cat nan_skip.log; fail "no skip warning naming the parameter"; }
/usr/bin/python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("nan_skip/metrics.jsonl")][1:]
assert [r["skipped"] for r in rows] == [False, True, False, False, False, False], rows
assert rows[-1]["skipped_steps"] == 1
for key in ("mfu", "comm_wait_s_by_op", "peak_rss_mb_per_rank"):
    assert key in rows[-1], key
assert len(rows[-1]["peak_rss_mb_per_rank"]) == 2
print("nan skip: step 2 skipped on every rank, training went on")
PY
"$DSTRAIN" ckpt inspect nan_skip/checkpoints/step-6 > /dev/null || fail "checkpoint after a skipped step"
# The Prometheus textfile of the last step, and the plots of this run's metrics.
grep -q '^dstrain_step{run="nan_skip"} 6$' nan_skip/metrics.prom || fail "metrics.prom step"
grep -q '^dstrain_skipped_steps_total{run="nan_skip"} 1$' nan_skip/metrics.prom || fail "metrics.prom skipped"
grep -q '^dstrain_peak_rss_bytes{run="nan_skip",rank="1"} [0-9]' nan_skip/metrics.prom || fail "metrics.prom rss"
echo "ok observability: metrics.prom of a real run"
if /usr/bin/python3 -c "import matplotlib" 2> /dev/null; then
  /usr/bin/python3 "$SRC/scripts/plot_metrics.py" nan_skip > /dev/null || fail "plot_metrics.py"
  test -s nan_skip/loss.png && test -s nan_skip/throughput.png || fail "no plots"
  echo "ok observability: plots of a real run"
elif in_ci; then
  fail "/usr/bin/python3 has no matplotlib (scripts/install_deps.sh installs python3-matplotlib)"
else
  echo "skipped: plots of a real run (/usr/bin/python3 has no matplotlib)"
fi

# MFU is measured against the matmul rate of the compute dtype: a bf16 run is not compared with
# the (slower) fp32 rate, so it stays a fraction.
"${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" precision.param_dtype=bf16 train.steps=3 train.peak_flops_per_rank=0 \
  train.output_dir=bf16_mfu > bf16_mfu.log 2>&1 || { cat bf16_mfu.log; fail "bf16 run"; }
grep -q -E "MFU denominator: [0-9.]* GFLOP/s per rank \(measured BFloat16 matmul(, computed in fp32 on this CPU)?\)" bf16_mfu.log ||
  { cat bf16_mfu.log; fail "the MFU denominator of a bf16 run is not the bf16 matmul rate"; }
/usr/bin/python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("bf16_mfu/metrics.jsonl") if '"mfu"' in l]
assert rows and all(0.0 < r["mfu"] < 1.0 for r in rows), [r["mfu"] for r in rows]
print("bf16 MFU", [round(r["mfu"], 4) for r in rows])
PY
echo "ok MFU in the compute dtype"

# --- Non-finite guard, policy abort after 2 consecutive: NaN from step 2 on.
DST_FAULT="nan:step=2,parameter=model.layers.0.self_attn.q_proj.weight" expect_error --ranks 2 1 \
  "^dstrain: error: rank [01]: step 2: loss .*first non-finite gradient: model.layers.0.self_attn.q_proj.weight; 1 consecutive non-finite steps reached train.nonfinite.max_consecutive" \
  "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.nonfinite.max_consecutive=1 \
  train.output_dir=nan_abort
echo "ok nan guard: skip continues, abort names the parameter"

# --- Bad input fails before training, with one line naming the key.
expect_error 2 "comm.timeout_s must be a number of seconds in \[0.1, 604800\], got -5" \
  "$DSTRAIN" train "${ARGS[@]}" comm.timeout_s=-5 train.output_dir=x
expect_error 2 "comm.timeout_s" "$DSTRAIN" train "${ARGS[@]}" comm.timeout_s=inf train.output_dir=x
DST_FAULT="explode:step=1" expect_error 2 "DST_FAULT: unknown fault 'explode'" \
  "$DSTRAIN" train "${ARGS[@]}" train.output_dir=x
touch not_a_directory
expect_error --ranks 2 1 "not_a_directory/run.*Not a directory" \
  "${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" train.output_dir=not_a_directory/run
if grep -q "step 1/" out.log err.log; then fail "training started despite an unwritable output dir"; fi
echo "ok bad input: comm.timeout_s, DST_FAULT and an unwritable output directory"

# --- Two "hosts" over TCP on loopback: the inter-node path (no shared-memory transport).
"${MPI[@]}" --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo \
  "$DSTRAIN" train "${ARGS[@]}" parallel.zero_stage=3 train.output_dir=tcp > tcp.log 2>&1 ||
  { cat tcp.log; fail "training over TCP"; }
"${MPI[@]}" "$DSTRAIN" train "${ARGS[@]}" parallel.zero_stage=3 train.output_dir=shm > shm.log 2>&1 ||
  { cat shm.log; fail "training over shared memory"; }
/usr/bin/python3 - <<'PY'
import json
tcp = [json.loads(l)["loss"] for l in open("tcp/metrics.jsonl") if '"loss"' in l]
shm = [json.loads(l)["loss"] for l in open("shm/metrics.jsonl") if '"loss"' in l]
assert len(tcp) == 6, tcp
assert tcp == shm, (tcp, shm)
print("tcp: 2 ranks over btl tcp,self, losses identical to shared memory:", tcp[-1])
PY
echo "fault tolerance: all checks passed"
