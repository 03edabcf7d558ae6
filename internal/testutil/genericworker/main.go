// Command genericworker is a stand-in for a generic HTTP inference server
// (llama.cpp's llama-server, vLLM, …) in tests: it knows nothing of the rbee
// worker contract. It serves GET /health (503 until "loaded", then 200) and
// POST /completion, and exits 0 on SIGTERM.
//
// It also serves OpenAI's routes like llama-server and vLLM do (openai.go):
// POST /v1/chat/completions, /v1/completions (streaming as SSE with
// "stream":true, else one JSON answer) and /v1/embeddings.
//
// Flags: --port P --model PATH. Env: GENERIC_LOAD_MS (time before /health
// turns 200), GENERIC_IGNORE_TERM=1 (ignore SIGTERM), GENERIC_EXIT_AFTER_MS
// (exit 4 after that long), GENERIC_READY_FILE (write a line with the
// wall-clock time, in Unix nanoseconds, at which /health turned 200), and
// the OpenAI knobs listed in openai.go.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	port := flag.Int("port", 0, "port")
	model := flag.String("model", "", "model path")
	flag.Int("ctx", 0, "context size (ignored; tests check that {ctx} reaches argv)")
	flag.Parse()
	if _, err := os.Stat(*model); err != nil {
		fmt.Fprintln(os.Stderr, "genericworker: model:", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "genericworker:", err)
		os.Exit(2)
	}
	fmt.Println("genericworker listening on", ln.Addr())
	var ready atomic.Bool
	loadMS, _ := strconv.Atoi(os.Getenv("GENERIC_LOAD_MS"))
	go func() {
		time.Sleep(time.Duration(loadMS) * time.Millisecond)
		ready.Store(true)
		if f := os.Getenv("GENERIC_READY_FILE"); f != "" {
			_ = os.WriteFile(f, []byte(strconv.FormatInt(time.Now().UnixNano(), 10)+"\n"), 0o600)
		}
		fmt.Println("genericworker ready")
	}()
	if ms, _ := strconv.Atoi(os.Getenv("GENERIC_EXIT_AFTER_MS")); ms > 0 {
		go func() {
			time.Sleep(time.Duration(ms) * time.Millisecond)
			fmt.Fprintln(os.Stderr, "genericworker: exiting 4 as asked")
			os.Exit(4)
		}()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, `{"status":"loading"}`, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("POST /completion", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"content":"hello"}`)
	})
	serveOpenAI(mux, ln, *port)
	sigs := make(chan os.Signal, 1)
	if os.Getenv("GENERIC_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}
	go func() {
		<-sigs
		fmt.Println("genericworker: SIGTERM, exiting")
		os.Exit(0)
	}()
	err = http.Serve(ln, mux)
	if os.Getenv("GENERIC_REFUSE_AFTER") != "" {
		select {} // the listener was closed on purpose: keep running, refusing connections
	}
	fmt.Fprintln(os.Stderr, "genericworker:", err)
	os.Exit(2)
}
