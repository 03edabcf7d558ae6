package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The OpenAI routes' knobs (env):
//
//   - GENERIC_TOKENS: chunks in an answer (default 3).
//   - GENERIC_TOKEN_MS: delay before each chunk (default 0).
//   - GENERIC_GATE_FILE: after the first chunk, wait until this file exists
//     before sending the rest (a test reads chunk one first).
//   - GENERIC_CRASH_AFTER_CHUNKS: exit 3 after sending that many chunks of
//     a streaming answer (a crash mid-stream).
//   - GENERIC_REFUSE_AFTER: after that many OpenAI requests, close the
//     listening socket (new connections are refused) but keep running.
//   - GENERIC_REQUEST_LOG: append each request, one JSON line
//     {"path","body","auth"}, to this file.
//   - GENERIC_CANCEL_FILE: append a line when a request's client went away
//     before its answer was complete.
//   - GENERIC_CHUNK_TS=1: each streamed chunk carries "ts", the wall-clock
//     time it was written in Unix nanoseconds (benchmarks measure relaying).
//   - GENERIC_NDJSON=1: stream as Ollama does, application/x-ndjson, one
//     JSON chunk a line (chunked, no Content-Length), instead of SSE.
//
// Every answer carries X-Generic-Port (which worker served it).
func serveOpenAI(mux *http.ServeMux, ln net.Listener, port int) {
	tokens := envInt("GENERIC_TOKENS", 3)
	tokenDelay := time.Duration(envInt("GENERIC_TOKEN_MS", 0)) * time.Millisecond
	crashAfter := envInt("GENERIC_CRASH_AFTER_CHUNKS", 0)
	refuseAfter := int64(envInt("GENERIC_REFUSE_AFTER", 0))
	chunkTS := os.Getenv("GENERIC_CHUNK_TS") == "1"
	ndjson := os.Getenv("GENERIC_NDJSON") == "1"
	var served atomic.Int64
	var logMu sync.Mutex
	record := func(w http.ResponseWriter, r *http.Request, body []byte) {
		n := served.Add(1)
		if refuseAfter > 0 && n == refuseAfter {
			ln.Close()
			w.Header().Set("Connection", "close") // no kept-alive connection either
		}
		f := os.Getenv("GENERIC_REQUEST_LOG")
		if f == "" {
			return
		}
		b, _ := json.Marshal(map[string]string{"path": r.URL.Path, "body": string(body), "auth": r.Header.Get("Authorization")})
		logMu.Lock()
		defer logMu.Unlock()
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			fh.Write(append(b, '\n'))
			fh.Close()
		}
	}
	cancelled := func() {
		if f := os.Getenv("GENERIC_CANCEL_FILE"); f != "" {
			if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				fh.WriteString("cancelled\n")
				fh.Close()
			}
		}
	}
	wait := func(r *http.Request, d time.Duration) bool {
		if d <= 0 {
			return r.Context().Err() == nil
		}
		select {
		case <-time.After(d):
			return true
		case <-r.Context().Done():
			return false
		}
	}
	gate := func(r *http.Request) bool {
		f := os.Getenv("GENERIC_GATE_FILE")
		if f == "" {
			return true
		}
		for {
			if _, err := os.Stat(f); err == nil {
				return true
			}
			if !wait(r, 5*time.Millisecond) {
				return false
			}
		}
	}
	gen := func(kind string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			record(w, r, body)
			var req struct {
				Model  string `json:"model"`
				Stream bool   `json:"stream"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error"}}`, err.Error())
				return
			}
			w.Header().Set("X-Generic-Port", strconv.Itoa(port))
			words := make([]string, tokens)
			for i := range words {
				words[i] = "tok" + strconv.Itoa(i)
			}
			if !req.Stream {
				for i := 0; i < tokens; i++ {
					if !wait(r, tokenDelay) || (i == 1 && !gate(r)) {
						cancelled()
						return
					}
				}
				w.Header().Set("Content-Type", "application/json")
				text := strings.Join(words, " ")
				if kind == "chat" {
					fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":%d,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":%d,"total_tokens":%d}}`+"\n",
						time.Now().Unix(), req.Model, text, tokens, tokens+1)
				} else {
					fmt.Fprintf(w, `{"id":"cmpl-1","object":"text_completion","created":%d,"model":%q,"choices":[{"index":0,"text":%q,"finish_reason":"stop"}]}`+"\n",
						time.Now().Unix(), req.Model, text)
				}
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			if ndjson {
				w.Header().Set("Content-Type", "application/x-ndjson")
			}
			w.Header().Set("Cache-Control", "no-cache")
			rc := http.NewResponseController(w)
			for i := 0; i < tokens; i++ {
				if !wait(r, tokenDelay) || (i == 1 && !gate(r)) {
					cancelled()
					return
				}
				var chunk string
				if kind == "chat" {
					chunk = fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","model":%q,"choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`, req.Model, words[i]+" ")
				} else {
					chunk = fmt.Sprintf(`{"id":"cmpl-1","object":"text_completion","model":%q,"choices":[{"index":0,"text":%q,"finish_reason":null}]}`, req.Model, words[i]+" ")
				}
				if chunkTS {
					chunk = chunk[:len(chunk)-1] + `,"ts":` + strconv.FormatInt(time.Now().UnixNano(), 10) + "}"
				}
				format := "data: %s\n\n"
				if ndjson {
					format = "%s\n"
				}
				if _, err := fmt.Fprintf(w, format, chunk); err != nil {
					cancelled()
					return
				}
				if err := rc.Flush(); err != nil {
					cancelled()
					return
				}
				if crashAfter > 0 && i+1 == crashAfter {
					fmt.Fprintln(os.Stderr, "genericworker: crashing mid-stream as asked")
					os.Exit(3)
				}
			}
			if !ndjson {
				fmt.Fprint(w, "data: [DONE]\n\n")
			}
			rc.Flush()
		}
	}
	mux.HandleFunc("POST /v1/chat/completions", gen("chat"))
	mux.HandleFunc("POST /v1/completions", gen("text"))
	mux.HandleFunc("POST /v1/embeddings", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		record(w, r, body)
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &req)
		w.Header().Set("X-Generic-Port", strconv.Itoa(port))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":%q,"usage":{"prompt_tokens":1,"total_tokens":1}}`+"\n", req.Model)
	})
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
