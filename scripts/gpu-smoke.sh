#!/bin/sh
# gpu-smoke.sh — a smoke test of rbee-hive's GPU support (SPEC §11) on a
# machine with an NVIDIA GPU and its driver (nvidia-smi on PATH).
#
# It builds the hive and the reference worker, starts a hive with
# gpu_inventory: auto on a fresh state dir, and checks that:
#   1. the hive's inventory (GET /v1/status) lists the same GPUs (uuids) as
#      nvidia-smi;
#   2. a worker spawned with backend cuda and device auto is placed on one
#      of them, with a VRAM estimate from the GGUF file, and the same GPU in
#      its WorkerInfo;
#   3. the worker's process has CUDA_VISIBLE_DEVICES=<that GPU's uuid>;
#   4. the per-worker GPU memory is plumbed through (stats.gpu_memory_bytes
#      in `worker get`) and the per-GPU metrics are exported.
# The reference worker runs its model on the CPU: it does not allocate GPU
# memory, so the per-worker figure it checks is present but 0 — this checks
# inventory, assignment, CUDA_VISIBLE_DEVICES and the stats plumbing, not a
# real CUDA load. (A profile running llama.cpp's llama-server built with
# CUDA would show real figures.)
#
# Needs: go, curl, nvidia-smi. Prints one line "gpu-smoke: PASS …" or
# "gpu-smoke: FAIL …" and exits 0 or 1. Usage: scripts/gpu-smoke.sh
set -u
cd "$(dirname "$0")/.."
fail() { echo "gpu-smoke: FAIL: $*"; exit 1; }
command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this needs a machine with an NVIDIA GPU"
command -v curl >/dev/null 2>&1 || fail "curl not found"
go build -o bin/rbee-hive ./cmd/rbee-hive && go build -o bin/llm-worker-rbee ./cmd/llm-worker-rbee || fail "build"

dir=$(mktemp -d /tmp/rbee-gpu-smoke.XXXXXX)
chmod 700 "$dir"
mkdir -p "$dir/models"
cp internal/builtinmodel/stories260K.gguf "$dir/models/"
port=$((19200 + $$ % 500))
url=http://127.0.0.1:$port
cat > "$dir/hive.yaml" <<YAML
addr: 127.0.0.1:$port
state_dir: $dir/state
model_roots: [$dir/models]
ports: {min: $((port + 1)), max: $((port + 40))}
gpu_inventory: auto
YAML
./bin/rbee-hive daemon --config "$dir/hive.yaml" > "$dir/hive.log" 2>&1 &
hive=$!
cleanup() { kill -TERM "$hive" 2>/dev/null; wait "$hive" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
i=0
until curl -sf "$url/health" >/dev/null; do
  i=$((i + 1)); [ $i -gt 200 ] && fail "hive not healthy after 20 s: $(tail -5 "$dir/hive.log")"
  sleep 0.1
done

# 1. The inventory.
smi=$(nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits) || fail "nvidia-smi failed"
echo "nvidia-smi:"; echo "$smi" | sed 's/^/  /'
status=$(curl -sf "$url/v1/status") || fail "GET /v1/status"
echo "$status" | grep -q '"gpu_inventory":"nvidia-smi"' || fail "the hive does not read nvidia-smi: $status"
n=0
for uuid in $(echo "$smi" | cut -d, -f2 | tr -d ' '); do
  n=$((n + 1))
  echo "$status" | grep -q "\"uuid\":\"$uuid\"" || fail "GPU $uuid is not in GET /v1/status: $status"
done
./bin/rbee-hive status --hive "$url" | sed 's/^/  /'

# 2. A GPU worker.
spawn=$(curl -s -w '\n%{http_code}' -X POST "$url/v1/workers/spawn" -H 'Content-Type: application/json' \
  -d "{\"model_ref\":\"file:$dir/models/stories260K.gguf\",\"backend\":\"cuda\",\"device\":\"auto\",\"settings\":{\"ctx\":512}}")
code=$(echo "$spawn" | tail -1); body=$(echo "$spawn" | head -1)
[ "$code" = 201 ] || fail "spawn answered $code: $body"
echo "spawn: $body"
id=$(echo "$body" | grep -o '"worker_id":"[^"]*"' | cut -d'"' -f4)
gpu=$(echo "$body" | grep -o '"gpu_uuid":"[^"]*"' | cut -d'"' -f4)
[ -n "$gpu" ] || fail "the worker got no GPU: $body"
echo "$smi" | grep -q "$gpu" || fail "the worker's GPU $gpu is not one nvidia-smi lists"
echo "$body" | grep -q '"source":"gguf"' || fail "no VRAM estimate from the GGUF file: $body"
i=0
while :; do
  info=$(curl -sf "$url/v1/workers/$id")
  echo "$info" | grep -q '"state":"idle"' && break
  i=$((i + 1)); [ $i -gt 300 ] && fail "worker not idle after 30 s: $info"
  sleep 0.1
done
echo "$info" | grep -q "\"gpu_uuid\":\"$gpu\"" || fail "worker get lacks gpu_uuid $gpu"

# 3. CUDA_VISIBLE_DEVICES in the worker's environment.
pid=$(echo "$info" | grep -o '"pid":[0-9]*' | head -1 | cut -d: -f2)
cvd=$(tr '\0' '\n' < "/proc/$pid/environ" | grep '^CUDA_VISIBLE_DEVICES=' | cut -d= -f2)
[ "$cvd" = "$gpu" ] || fail "worker $pid has CUDA_VISIBLE_DEVICES=$cvd, want $gpu"

# 4. Per-worker GPU memory and metrics.
echo "$info" | grep -q '"gpu_memory_bytes":' || fail "worker stats lack gpu_memory_bytes: $info"
mem=$(echo "$info" | grep -o '"gpu_memory_bytes":[0-9]*' | cut -d: -f2)
metrics=$(curl -sf "$url/metrics") || fail "GET /metrics"
[ "$(echo "$metrics" | grep -c '^rbee_hive_gpu_memory_total_bytes{')" = "$n" ] || fail "want $n rbee_hive_gpu_memory_total_bytes series"
echo "$metrics" | grep -q "^rbee_hive_worker_gpu_memory_bytes{.*worker_id=\"$id\"" || fail "no rbee_hive_worker_gpu_memory_bytes for $id"
curl -sf -X POST "$url/v1/workers/$id/stop" >/dev/null || fail "stop"
echo "gpu-smoke: PASS: $n GPU(s) read; worker $id on $gpu with CUDA_VISIBLE_DEVICES=$cvd; gpu_memory_bytes=$mem (0 expected: the reference worker computes on the CPU)"
