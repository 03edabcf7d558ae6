package refworker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/refworker"
)

// llama.cpp's greedy 48-token completions for the built-in model.
const (
	refOnce = ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it,"
	refLily = ". They saw a big box with a big box. They wanted to play with it. They wanted to play with the box. They wanted to play with the box.\n\"L"
)

type oaUsage struct{ PromptTokens, CompletionTokens, TotalTokens int }

type oaAnswer struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text    string `json:"text"`
		Message *struct {
			Role, Content string
		} `json:"message"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func (p *proc) openai(path, body string) (oaAnswer, []oaAnswer) {
	p.t.Helper()
	resp, err := p.post(context.Background(), path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		p.t.Fatalf("%s %s: %d %s", path, body, resp.StatusCode, b)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		var a oaAnswer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			p.t.Fatal(err)
		}
		return a, nil
	}
	events := sseEvents(resp.Body, nil)
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		p.t.Fatalf("stream does not end in [DONE]: %q", events)
	}
	var chunks []oaAnswer
	for _, e := range events[:len(events)-1] {
		var a oaAnswer
		if err := json.Unmarshal([]byte(e), &a); err != nil {
			p.t.Fatalf("chunk %q: %v", e, err)
		}
		chunks = append(chunks, a)
	}
	return oaAnswer{}, chunks
}

func TestOpenAICompletionsGreedyMatchesLlamaCpp(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{})
	w.waitReady()
	a, _ := w.openai("/v1/completions", `{"model":"stories","prompt":"Once upon a time","max_tokens":48,"temperature":0}`)
	if a.Object != "text_completion" || a.Model != "stories" || len(a.Choices) != 1 || a.Choices[0].Text != refOnce ||
		*a.Choices[0].FinishReason != "length" || a.Usage == nil || a.Usage.PromptTokens != 5 || a.Usage.CompletionTokens != 48 || a.Usage.TotalTokens != 53 {
		t.Fatalf("completion = %+v", a)
	}

	_, chunks := w.openai("/v1/completions", `{"prompt":["Lily and Ben went to the park"],"max_tokens":48,"temperature":0,"stream":true}`)
	var text strings.Builder
	for i, c := range chunks {
		text.WriteString(c.Choices[0].Text)
		last := i == len(chunks)-1
		if (c.Choices[0].FinishReason != nil) != last || (c.Usage != nil) != last || c.ID != chunks[0].ID {
			t.Fatalf("chunk %d of %d: %+v", i, len(chunks), c)
		}
	}
	if text.String() != refLily {
		t.Fatalf("streamed text %q", text.String())
	}
	if l := chunks[len(chunks)-1]; *l.Choices[0].FinishReason != "length" || l.Usage.CompletionTokens != 48 {
		t.Fatalf("last chunk %+v", l)
	}
}

func TestOpenAIChatCompletions(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{})
	w.waitReady()
	// The chat template joins the contents: one user message is the prompt.
	a, _ := w.openai("/v1/chat/completions", `{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":48,"temperature":0}`)
	if a.Object != "chat.completion" || a.Choices[0].Message == nil || a.Choices[0].Message.Role != "assistant" ||
		a.Choices[0].Message.Content != refOnce || *a.Choices[0].FinishReason != "length" || a.Usage.CompletionTokens != 48 {
		t.Fatalf("chat completion = %+v", a)
	}
	// A stop string ends the text before it, with finish_reason stop.
	_, chunks := w.openai("/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"text","text":"Once upon a time"}]}],"max_tokens":48,"temperature":0,"stream":true,"stop":["Lily."]}`)
	var text strings.Builder
	if d := chunks[0].Choices[0].Delta; d == nil || d.Role != "assistant" {
		t.Fatalf("first chunk %+v", chunks[0])
	}
	for _, c := range chunks {
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("chunk %+v", c)
		}
		if d := c.Choices[0].Delta; d != nil && d.Content != nil {
			text.WriteString(*d.Content)
		}
	}
	// The usage counts every token generated, the one holding the stop string too.
	upTo := 0
	for acc := ""; !strings.Contains(acc, "Lily."); upTo++ {
		acc += refworker.Tokens("Once upon a time", 48)[upTo]
	}
	l := chunks[len(chunks)-1]
	if want := ", there was a little girl named "; text.String() != want || *l.Choices[0].FinishReason != "stop" || l.Usage.CompletionTokens != upTo {
		t.Fatalf("streamed %q, last chunk %+v finish %q usage %+v", text.String(), l, *l.Choices[0].FinishReason, *l.Usage)
	}
	for _, body := range []string{`{"messages":[]}`, `{"messages":[{"role":"user","content":"x"}],"n":2}`, `{"messages":[{"role":"user","content":"x"}],"temperature":-1}`, `{"messages":`} {
		if st, code := w.errorCode("/v1/chat/completions", body); st != 400 || code != "INVALID_REQUEST" {
			t.Errorf("body %s: %d %s, want 400 INVALID_REQUEST", body, st, code)
		}
	}
}

func TestSeededSamplingIsDeterministic(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{})
	w.waitReady()
	body := `{"prompt":"Once upon a time","max_tokens":40,"temperature":1,"top_p":0.9,"top_k":40,"seed":`
	a, _ := w.openai("/v1/completions", body+`7}`)
	b, _ := w.openai("/v1/completions", body+`7}`)
	c, _ := w.openai("/v1/completions", body+`8}`)
	if a.Choices[0].Text != b.Choices[0].Text || a.Choices[0].Text == c.Choices[0].Text {
		t.Fatalf("seed 7 twice: %q, %q; seed 8: %q", a.Choices[0].Text, b.Choices[0].Text, c.Choices[0].Text)
	}
}

// A client that goes away stops generation for its slot at once, not at
// max_tokens.
func TestClientDisconnectStopsGeneration(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{args: []string{"--ctx", "8192"}})
	w.waitReady()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := w.post(ctx, "/v1/completions", `{"prompt":"Once upon a time","max_tokens":4096,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	w.waitLog("generation stopped after")
	m := regexpFind(w.stderr(), `generation stopped after (\d+) tokens`)
	if m >= 2000 {
		t.Fatalf("generation went on for %d tokens after the client left", m)
	}
	eventually(t, 5*time.Second, "the slot to be free", func() bool {
		_, r := w.getJSON("/v1/ready")
		return r["state"] == "idle"
	})
}

func TestParallelSlots(t *testing.T) {
	t.Parallel()
	hive := newFakeHive(t)
	w := startWorker(t, workerOpts{hiveURL: hive.srv.URL, args: []string{"--parallel", "2"}, env: []string{"RBEE_HEARTBEAT_INTERVAL_MS=50"}})
	w.waitReady()
	eventually(t, 5*time.Second, "an idle heartbeat", func() bool { return len(hive.heartbeatsIn("idle")) > 0 })
	if b := hive.heartbeatsIn("idle")[0]; *b.SlotsTotal != 2 {
		t.Fatalf("heartbeat %+v, want slots_total 2", b)
	}
	var resps []io.Closer
	for range 2 {
		resp, err := w.post(context.Background(), "/v1/inference", `{"prompt":"slow","max_tokens":100,"token_delay_ms":200}`)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		resps = append(resps, resp.Body)
	}
	if st, code := w.errorCode("/v1/completions", `{"prompt":"x","max_tokens":1}`); st != 503 || code != "ALL_SLOTS_BUSY" {
		t.Fatalf("third request = %d %s, want 503 ALL_SLOTS_BUSY", st, code)
	}
	for _, r := range resps {
		r.Close()
	}
}

// regexpFind returns the number the first group of re matches in s, or -1.
func regexpFind(s, re string) int {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A chat request without max_tokens stopped after 16 tokens (the legacy
// completions default), mid-sentence: `make run` and one curl printed
// ", there was a little girl who loved to ho". OpenAI's chat has no such
// default: the answer runs to the end of the text or of the context.
func TestChatWithoutMaxTokensRunsToTheEnd(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{})
	w.waitReady()
	a, _ := w.openai("/v1/chat/completions", `{"messages":[{"role":"user","content":"Once upon a time"}],"temperature":0}`)
	if a.Usage.CompletionTokens <= 16 || a.Choices[0].FinishReason == nil {
		t.Fatalf("chat without max_tokens: %d tokens, %+v", a.Usage.CompletionTokens, a.Choices[0])
	}
	// The legacy completions route keeps OpenAI's default of 16.
	c, _ := w.openai("/v1/completions", `{"prompt":"Once upon a time","temperature":0}`)
	if c.Usage.CompletionTokens != 16 || *c.Choices[0].FinishReason != "length" {
		t.Fatalf("completion without max_tokens: %d tokens, %+v", c.Usage.CompletionTokens, c.Choices[0])
	}
}

// TestNonStreamedCompletionCutOffByDrainAnswered200Empty: a non-streamed
// completion cut off by the drain timeout returned without writing, so the
// client got 200 with an empty body instead of an error in the API's shape.
func TestNonStreamedCompletionCutOffByDrainAnswered200Empty(t *testing.T) {
	t.Parallel()
	w := startWorker(t, workerOpts{env: []string{"RBEE_DRAIN_TIMEOUT_MS=200", "LLMW_FAKE_TOKEN_DELAY_MS=1000"}})
	w.waitReady()
	type answer struct {
		code int
		body string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := w.post(context.Background(), "/v1/completions", `{"prompt":"Once","max_tokens":100}`)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{resp.StatusCode, string(b), err}
	}()
	eventually(t, 5*time.Second, "the request in flight", func() bool {
		_, ready := w.getJSON("/v1/ready")
		return ready["state"] == "busy"
	})
	syscall.Kill(w.pid, syscall.SIGINT)
	if code, _ := w.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	a := <-got
	if a.err == nil && (a.code == http.StatusOK || !strings.Contains(a.body, `"code"`)) {
		t.Fatalf("cut-off completion answered %d %q, want an error in the API's shape", a.code, a.body)
	}
}
