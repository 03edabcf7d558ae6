// Package refworker is the reference worker, llm-worker-rbee: a real HTTP
// worker that follows the worker contract of SPEC §5 and runs a real GGUF
// Llama model on the CPU in pure Go (SPEC §15; packages gguf and llama). cmd/llm-worker-rbee is
// a thin main around Main; everything lives here so tests (and test binaries
// that re-execute themselves as a worker) can reach it.
//
// # Command line and environment
//
//	llm-worker-rbee --worker-id ID --model PATH --model-ref REF --backend B
//	    --device N --port P --hive-url URL [--ctx N] [--parallel N] [--threads N]
//	    [--test-mode]
//
// --ctx is each slot's context in tokens (default: the model's context
// length, within 512..4096); --parallel the number of slots, i.e. concurrent
// requests, each with its own KV cache made on first use (default:
// RBEE_WORKER_SLOTS, else 1); --threads the goroutines each matrix product
// is split across (default 1; for a model as small as stories260K one
// thread is fastest).
//
// --hive-url is the hive's base URL (http://127.0.0.1:9200); the worker
// appends /v1/workers/ready and /v1/heartbeat itself. An empty --hive-url runs
// the worker standalone: no ready callback and no heartbeats. --port 0 binds
// an ephemeral port, which is then reported in the logs and the ready callback.
//
// Contract environment:
//
//	RBEE_WORKER_TOKEN            sent as "Authorization: Bearer <token>" on ready and heartbeat calls
//	RBEE_HEARTBEAT_INTERVAL_MS   heartbeat interval once ready (default 5000)
//	RBEE_WORKER_SLOTS            concurrent inference requests when --parallel is not given (default 1)
//	RBEE_DRAIN_TIMEOUT_MS        how long a shutdown waits for in-flight requests (default 5000)
//	LLMW_FAKE_LOAD_MS            spread the model load over this many ms (default 0: as fast as the disk)
//	LLMW_FAKE_TOKEN_DELAY_MS     default delay before each streamed token (default 0)
//	LLMW_FAKE_READY_STAMP       for benchmarks: a file that gets "PID NS" once the ready
//	                             callback is accepted, NS being the wall-clock Unix ns just
//	                             before the accepted POST was sent
//
// # Life of a worker
//
//  1. Bind 127.0.0.1:P (exit 2 if that fails), so /health and /v1/ready answer
//     while loading.
//  2. Memory-map the GGUF model (so workers of the same model share its pages)
//     and read its tensors in file order, sending loading heartbeats
//     {state:"loading", progress:{done,total}} in tensor bytes at the start,
//     at most every 250 ms, and at the end. A missing file, or one that is
//     not a loadable GGUF Llama model, exits 1 with a message naming the file
//     and the fault.
//  3. POST /v1/workers/ready, retrying with back-off (50 ms doubling to 2 s)
//     while the hive is unreachable or answers 5xx, for up to 2 minutes; a 4xx
//     answer (or giving up) exits 1.
//  4. Heartbeat every interval, and at once on every idle ⇄ busy change.
//  5. On POST /v1/shutdown, SIGTERM or SIGINT: refuse new work (503 DRAINING),
//     wait up to the drain timeout for in-flight requests, exit 0.
//
// HTTP endpoints: GET /health, GET /v1/ready, GET /v1/loading/progress (SSE),
// POST /v1/inference (SSE), POST /v1/completions, POST /v1/chat/completions,
// POST /v1/shutdown. While draining, /v1/ready answers
// {"ready":false,"state":"draining"}.
//
// POST /v1/inference takes {"prompt", "max_tokens" (default 16),
// "temperature" (default 0: greedy), "top_k", "top_p", "seed",
// "token_delay_ms"} and streams {"token","index"} events, then [DONE]. The
// prompt gets the BOS token in front, as llama.cpp does. Greedy output of
// the built-in stories260K model equals llama.cpp's token for token.
//
// The OpenAI routes take OpenAI's fields (model, prompt or messages,
// max_tokens — default 16 for completions, to the end of the text or the
// context for chat —, temperature default 1, top_p, top_k, seed, stop, stream) and
// answer in OpenAI's shapes, streaming chunks ending in data: [DONE], with
// usage and finish_reason ("length", or "stop" at a stop string). Chat
// template: the messages' contents joined by newlines (base models have no
// chat format). Every route answers 503 ALL_SLOTS_BUSY when every slot is
// taken; a client that goes away stops its generation at once.
//
// # Misbehaviours for tests
//
// All switched by environment only; unset means off.
//
//	LLMW_FAKE_EXIT_CODE=N              print "fake: exiting with code N" on stderr and exit N before binding
//	LLMW_FAKE_NEVER_READY=1            load, then stay loading silently: no ready callback, no heartbeats at all
//	LLMW_FAKE_READY_DELAY_MS=N         wait N ms after loading before the ready callback (no progress meanwhile)
//	LLMW_FAKE_CRASH_AFTER_REQUESTS=N   exit 3 after N completed inference requests
//	LLMW_FAKE_CRASH_AFTER_MS=N         exit 3 N ms after the ready callback succeeded
//	LLMW_FAKE_EXIT_AFTER_MS=N          exit 0 N ms after the ready callback succeeded (a clean exit nobody asked for)
//	LLMW_FAKE_CRASH_SIGNAL=ABRT|SEGV|KILL  with a CRASH_AFTER_*: die by that signal instead of exit 3
//	LLMW_FAKE_HANG_HEALTH=1            GET /health never answers
//	LLMW_FAKE_HANG_HEALTH_AFTER_MS=N   GET /health answers for N ms after ready, then never again
//	LLMW_FAKE_NO_HEARTBEAT=1           no heartbeats after ready (loading heartbeats are still sent)
//	LLMW_FAKE_IGNORE_SHUTDOWN=1        ignore SIGTERM and SIGINT; POST /v1/shutdown answers 202 and does nothing
//	LLMW_FAKE_FORK_CHILD=1|setsid      at start, start a sleeping child that holds stdout/stderr and
//	                                   ignores SIGTERM; "setsid" puts it in its own session (out of the
//	                                   process group). Prints "fake: child pid N" on stdout.
//	LLMW_FAKE_ALLOC_MB=N               after loading, before ready: map and touch N MiB in 8 MiB steps
//	LLMW_FAKE_FORK_MANY=N              after ready, try to start N sleeping children; prints
//	                                   "fake: fork_many started=K failed=M" on stdout
//	LLMW_FAKE_BUSY_LOOP=1              after ready, spin one goroutine in a tight CPU loop
//
// The sleeping children are this same executable re-executed with
// RBEE_REFWORKER_CHILD (ChildModeEnv) set; Main checks that variable first,
// so a test binary that re-executes itself as a worker gets them too.
//
// # Footprint
//
// Unless GOMAXPROCS or GOGC are set in the environment, Main caps GOMAXPROCS
// at 2 (or --threads) and sets GOGC to 50, so a thousand idle workers fit on
// a small box. The model is memory-mapped read-only and shared, so workers of
// one model share its pages in the page cache; a slot's KV cache is made when
// the slot first serves. An idle stories260K worker costs about 1.5 MiB of
// private memory (RssAnon; Pss about 1.9 MiB).
package refworker
