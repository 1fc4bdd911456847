#!/usr/bin/env bash
# The GPU suite: one command for a machine with a CUDA device, in two tiers.
#
# Tier 1 (always; meant to finish well within 8 minutes on one H200, build included): builds
# siri with the CUDA kernels against the machine's torch, checks that the kernels and a device
# are visible, runs the CUDA op tests, the CUDA engine tests, a trainer smoke and every
# benchmark with --device cuda (each benchmark under a time limit).
# Tier 2 (only with --sanitize): the CUDA op tests under compute-sanitizer memcheck and
# racecheck, then the whole test suite (CPU and CUDA).
#
# Everything goes to $OUT (or bench_results/gpu when OUT is unset): the log, JUnit XML files
# and the benchmarks' JSON files. Missing Python packages travel as wheels in .whl/ (see
# README, "GPU suite"); they are installed into /tmp/site with --no-index, since the GPU
# machine has no network. The exit status is non-zero when any step failed or timed out.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: bash scripts/gpu_suite.sh [--sanitize] [--list] [--help]

Tier 1 (always): siri's pinned dependencies, nvidia-smi, CUDA build, siri info, CUDA kernels
present, CUDA op tests, CUDA engine tests, trainer smoke, every benchmarks/bench_*.py with
--device cuda.
Tier 2 (--sanitize): compute-sanitizer memcheck and racecheck over the CUDA op tests, and
the whole test suite (CPU + CUDA).

  --sanitize  also run tier 2
  --list      print the steps that would run, with their time limits, and run nothing
  --help      print this help

Environment: OUT (results directory, default bench_results/gpu), PYTHON (default python3),
SIRI_CUDA_ARCHS (default 90), CUDA_HOME (default /usr/local/cuda), MAX_JOBS (default 16),
SIRI_BENCH_TIME_LIMIT_S (per-benchmark limit, default 90; bench_grpo_loss gets 5/3 of it),
SIRI_GPU_SUITE_BUDGET_S (tier 1's time budget; the summary warns past it; default 480).
EOF
}

sanitize=0
list=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    --list) list=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_suite.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
RESULTS="${OUT:-bench_results/gpu}"
# one GPU, so one architecture (with its PTX): the build stays a small part of the 8 minutes
export SIRI_BENCH_OUT="$RESULTS" PYTHONUNBUFFERED=1 SIRI_CUDA=1 SIRI_CUDA_ARCHS="${SIRI_CUDA_ARCHS:-90}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" MAX_JOBS="${MAX_JOBS:-16}"
PY="${PYTHON:-python3}"
TIER1_BUDGET_S="${SIRI_GPU_SUITE_BUDGET_S:-480}"
BENCH_TIME_LIMIT_S="${SIRI_BENCH_TIME_LIMIT_S:-90}"
TEST_TIME_LIMIT_S=300
if [[ ! $BENCH_TIME_LIMIT_S =~ ^[1-9][0-9]*$ ]]; then
  echo "gpu_suite.sh: SIRI_BENCH_TIME_LIMIT_S must be a positive number of seconds, got '$BENCH_TIME_LIMIT_S'" >&2
  exit 2
fi
if [[ ! $TIER1_BUDGET_S =~ ^[0-9]+$ ]]; then
  echo "gpu_suite.sh: SIRI_GPU_SUITE_BUDGET_S must be a whole number of seconds, got '$TIER1_BUDGET_S'" >&2
  exit 2
fi
if (( list )); then
  log=/dev/null
else
  mkdir -p "$RESULTS"
  log="$RESULTS/gpu_suite.log"
  : >"$log"
fi
status=0
tier=1
step_tiers=() step_names=() step_ms=() step_results=()

now_ms() { date +%s%3N; }
seconds() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }  # milliseconds -> "12.3"

record() {  # record TIER NAME MS RESULT: one line of the final summary; a result other than ok fails the suite
  step_tiers+=("$1") step_names+=("$2") step_ms+=("$3") step_results+=("$4")
  if [[ $4 != ok ]]; then
    echo "!!! step $4: $2" | tee -a "$log"
    status=1
  fi
}

run() {  # run [--limit SECONDS] NAME COMMAND...: one step; keep going on failure, remember it
  local limit=""
  if [[ $1 == --limit ]]; then limit=$2; shift 2; fi
  local name=$1
  shift
  if (( list )); then
    echo "[tier $tier] $name${limit:+ (limit $limit s)}: $*"
    return 0
  fi
  echo "=== [tier $tier] $name ===" | tee -a "$log"
  local start rc result=ok
  start=$(now_ms)
  if [[ -n $limit ]]; then
    # timeout signals the command's whole process group, so worker processes go too
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
  else
    "$@" 2>&1 | tee -a "$log"
  fi
  rc=${PIPESTATUS[0]}
  local elapsed=$(( $(now_ms) - start ))
  if [[ -n $limit ]] && (( rc == 124 || rc == 137 )); then
    result="TIMED OUT (limit $limit s)"
  elif (( rc != 0 )); then
    result="FAILED (exit $rc)"
  fi
  record "$tier" "$name" "$elapsed" "$result"
  echo "--- $name: $result in $(seconds "$elapsed") s" | tee -a "$log"
}

# The CUDA op tests: the CUDA variants (-k cuda) of every kernel's tests.
OP_TESTS=(tests/test_group_advantages.py tests/test_logprobs.py tests/test_grpo_loss.py tests/test_sampling.py
          tests/test_paged_attention.py tests/test_paged_attention_run.py tests/test_rotary.py
          tests/test_header_math.py tests/test_attention_graph_plan.py tests/test_paged_prefill.py
          tests/test_cuda_kernel_math.py)
# The trainer smoke: short runs whose model.device "auto" resolves to CUDA on this machine: the
# trainer end to end (2 steps), its collectives on NCCL (DDP and FSDP), the KV pool's CUDA
# memory lifecycle, and bf16 compute with fp32 master weights.
TRAINER_SMOKE=(tests/test_trainer.py::test_python_api_callbacks_and_reward_errors
               tests/test_collective_devices.py tests/test_kv_memory.py
               tests/test_mixed_precision.py::test_bf16_compute_with_fp32_master_weights_applies_the_update)
# GPU-path checks written and run on the CPU (host code, eager stand-ins) whose CUDA side no GPU
# has run yet: --list prints them as unverified. Each names a test the steps above run.
UNVERIFIED=(
  "tests/test_engine_cuda.py::test_default_pool_with_graphs_matches_eager: the paper layout with default pool sizing and CUDA graphs on"
  "tests/test_engine_cuda.py::test_graph_replay_splits_the_skewed_batch_like_eager: graph vs eager attention plan, [32768] + [512] x 63"
  "tests/test_engine_cuda.py::test_graphs_are_reused_across_generate_calls: no capture in the second generate(), capture time printed"
  "tests/test_paged_attention_run.py: the CUDA split clamp and the chunk_tokens device scalar (CUDA op tests)"
  "tests/test_grpo_loss.py: a NaN log-prob reaches the CUDA loss (CUDA op tests)"
  "benchmarks/bench_vs_trl.py: siri's training step against TRL's GRPOTrainer on a GPU (vLLM colocate when vllm is carried)"
)
# Fails (rather than letting every CUDA test skip quietly) when the build has no CUDA kernels
# or torch sees no device.
CUDA_PRESENT='import sys, torch, siri; cuda, kernels = torch.cuda.is_available(), siri.has_cuda_kernels(); print(f"torch {torch.__version__}: CUDA device visible: {cuda}; siri CUDA kernels: {kernels}"); sys.exit(0 if cuda and kernels else "every CUDA test would be skipped")'

# ---- tier 1 ----
if compgen -G ".whl/*.whl" >/dev/null; then
  run "install carried wheels" "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# the tested releases in constraints.txt (transformers, math-verify, ...): the image has others unless
# .whl/ carried them (make gpu-wheels); a mismatch fails this step, the suite goes on
run "pinned dependencies" "$PY" scripts/gpu_wheels.py --check
run "nvidia-smi" nvidia-smi
run "build siri with CUDA" "$PY" -m pip install --no-build-isolation --no-deps -e .
run "siri info" "$PY" -m siri info
run "CUDA kernels present" "$PY" -c "$CUDA_PRESENT"
run --limit "$TEST_TIME_LIMIT_S" "CUDA op tests" "$PY" -m pytest -q -rs -k cuda "${OP_TESTS[@]}" \
    --junitxml="$RESULTS/pytest_cuda_ops.xml"
run --limit "$TEST_TIME_LIMIT_S" "CUDA engine tests" "$PY" -m pytest -q -rs tests/test_engine_cuda.py \
    --junitxml="$RESULTS/pytest_engine_cuda.xml"
run --limit "$TEST_TIME_LIMIT_S" "trainer smoke" "$PY" -m pytest -q -rs "${TRAINER_SMOKE[@]}" \
    --junitxml="$RESULTS/pytest_trainer_smoke.xml"
for bench in benchmarks/bench_*.py; do
  extra=()
  # the one-GPU bf16 training run (fp32 masters): its weights must change and its measured
  # peak must be within 20% of the memory plan's
  [[ $bench == *bench_memory_plan.py ]] && extra=(--layers 4 --steps 3 --max-error 0.2 --min-changed 0.5)
  # a decode layer must stay within 20 dispatched ops (the engine's host cost)
  [[ $bench == *bench_engine_overhead.py ]] && extra=(--max-ops-per-layer 20)
  # reward scoring on the machine's 16 cores: --check-goal fails the step unless the pool scores
  # at least 0.8 x workers times as fast as the trainer's serial path
  [[ $bench == *bench_rewards.py ]] && extra=(--responses 512 --repeats 2 --check-goal)
  # siri's step against TRL's on a 135M-shaped model in bf16; TRL generates with vLLM when it is there
  if [[ $bench == *bench_vs_trl.py ]]; then
    extra=(--shape llama-135m --prompts 8 --group 8 --cap 512 --dtype bfloat16 --repeats 3)
    "$PY" -c "import vllm" 2>/dev/null && extra+=(--trl-vllm)
  fi
  limit=$BENCH_TIME_LIMIT_S
  # Liger's fused GRPO loss, when carried, is torch.compiled once per dtype inside the run
  [[ $bench == *bench_grpo_loss.py ]] && limit=$((BENCH_TIME_LIMIT_S * 5 / 3))
  run --limit "$limit" "$bench" "$PY" "$bench" --device cuda ${extra[@]+"${extra[@]}"}
done

# ---- tier 2 ----
if (( sanitize )); then
  tier=2
  # out-of-bounds/misaligned accesses (memcheck) and shared-memory races (racecheck) in the
  # CUDA variants of the op tests
  SANITIZER="$CUDA_HOME/bin/compute-sanitizer"
  for tool in memcheck racecheck; do
    name="compute-sanitizer --tool $tool (CUDA op tests)"
    if (( list )) || [[ -x $SANITIZER ]]; then
      run "$name" "$SANITIZER" --tool "$tool" --error-exitcode 1 --target-processes all \
          "$PY" -m pytest -q -x -k cuda "${OP_TESTS[@]}"
    else
      echo "=== [tier 2] $name ===" | tee -a "$log"
      record 2 "$name" 0 "FAILED (compute-sanitizer not found at $SANITIZER)"
    fi
  done
  run "all tests (CPU + CUDA)" "$PY" -m pytest -q -rs tests --junitxml="$RESULTS/pytest.xml"
fi

if (( list )); then
  for check in "${UNVERIFIED[@]}"; do echo "[unverified] $check"; done
  exit 0
fi
{
  echo "=== summary ==="
  printf '%-5s %9s  %-28s %s\n' tier seconds result step
  tier1_ms=0 total_ms=0
  for i in "${!step_names[@]}"; do
    printf '%-5s %9s  %-28s %s\n' "${step_tiers[$i]}" "$(seconds "${step_ms[$i]}")" "${step_results[$i]}" \
        "${step_names[$i]}"
    total_ms=$((total_ms + step_ms[i]))
    (( step_tiers[i] == 1 )) && tier1_ms=$((tier1_ms + step_ms[i]))
  done
  echo "tier 1 total: $(seconds "$tier1_ms") s (budget $TIER1_BUDGET_S s); all steps: $(seconds "$total_ms") s"
  if (( tier1_ms > TIER1_BUDGET_S * 1000 )); then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! WARNING: tier 1 took $(seconds "$tier1_ms") s, over its budget of $TIER1_BUDGET_S s"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  fi
  echo "GPU suite finished with status $status; results in $RESULTS"
} | tee -a "$log"
exit $status
