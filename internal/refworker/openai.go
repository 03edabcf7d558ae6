package refworker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The OpenAI-compatible routes (SPEC §5 item 7): POST /v1/completions and
// POST /v1/chat/completions, streaming ("stream":true: SSE chunks in
// OpenAI's shape, ending in data: [DONE]) and not.
//
// Sampling follows OpenAI's defaults: temperature 1 and top_p 1 unless
// given; top_k (an extension llama.cpp's server also takes) and seed are
// honoured, and so is stop (up to 4 strings: the text ends before the first
// one and finish_reason is "stop"; stories260K never ends a text by itself,
// so stop strings are its only way to "stop"). Fields this worker does not
// use (logprobs, user, …) are accepted and ignored; n must be 1.
//
// Chat template: stories260K and models like it are base models with no
// chat format, so the prompt is the messages' contents joined by newlines,
// in order, whatever their roles, with BOS in front. A user message "Once
// upon a time" is continued as a story.

type oaSampling struct {
	Model               string          `json:"model"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                *int            `json:"top_k"`
	Seed                *int64          `json:"seed"`
	Stream              bool            `json:"stream"`
	N                   *int            `json:"n"`
	Stop                json.RawMessage `json:"stop"`
}

type oaCompletionRequest struct {
	oaSampling
	Prompt json.RawMessage `json:"prompt"`
}

type oaMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type oaChatRequest struct {
	oaSampling
	Messages []oaMessage `json:"messages"`
}

type oaUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (j *job) usage() *oaUsage {
	return &oaUsage{j.promptTokens, j.completionTokens, j.promptTokens + j.completionTokens}
}

// oaBody is a completion answer or a stream chunk; C is its choice type.
type oaBody[C any] struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []C      `json:"choices"`
	Usage   *oaUsage `json:"usage,omitempty"`
}

// collect runs the job to its end and returns the whole text with the
// finish reason (a non-streamed answer).
func (j *job) collect(ctx context.Context) (text, finish string, err error) {
	var b strings.Builder
	finish, err = j.run(ctx, func(piece string) error { b.WriteString(piece); return nil })
	return b.String(), finish, err
}

// writeCutOff answers a non-streamed request whose generation stopped
// before its end (the worker stopping, or failing): without it the client
// got 200 with an empty body. A client that went away gets nothing.
func (w *worker) writeCutOff(rw http.ResponseWriter, r *http.Request) {
	if r.Context().Err() != nil {
		return
	}
	e := errDraining
	e.message = "the worker stopped before the answer was complete"
	if w.ctx.Err() == nil {
		e = apiError{http.StatusInternalServerError, "INTERNAL_ERROR", "generation failed"}
	}
	writeError(rw, e)
}

func newID(prefix string) string {
	b := make([]byte, 12)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// generation checks the shared OpenAI fields. Without max_tokens a
// completion gets 16 tokens (as OpenAI's /v1/completions) and a chat
// answer runs to the end of its text or of the context (as /v1/chat).
func (s *oaSampling) generation(chat bool) (generation, *apiError) {
	if s.N != nil && *s.N != 1 {
		return generation{}, invalid("n must be 1")
	}
	maxTokens := s.MaxTokens
	if maxTokens == nil {
		maxTokens = s.MaxCompletionTokens
	}
	if maxTokens == nil && chat {
		untilEnd := maxMaxTokens
		maxTokens = &untilEnd
	}
	g, e := newGeneration(maxTokens, s.Temperature, s.TopK, s.TopP, s.Seed, 1)
	if e != nil {
		return g, e
	}
	if len(s.Stop) > 0 && string(s.Stop) != "null" {
		var one string
		if json.Unmarshal(s.Stop, &one) == nil {
			g.stop = []string{one}
		} else if json.Unmarshal(s.Stop, &g.stop) != nil || len(g.stop) > 4 {
			return g, invalid("stop must be a string or an array of up to 4 strings")
		}
		g.stop = slices.DeleteFunc(g.stop, func(s string) bool { return s == "" })
	}
	return g, nil
}

func (w *worker) model(requested string) string {
	if requested != "" {
		return requested
	}
	return w.cfg.modelRef
}

// textOf reads a prompt or message content: a string, or an array of
// strings or of {"type":"text","text":…} parts, joined.
func textOf(raw json.RawMessage, what string) (string, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return "", invalid("%s must be a string or an array", what)
	}
	var b strings.Builder
	for _, p := range parts {
		var ps string
		if json.Unmarshal(p, &ps) == nil {
			b.WriteString(ps)
			continue
		}
		var part struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if json.Unmarshal(p, &part) != nil || part.Type != "text" {
			return "", invalid("%s: only text parts are supported", what)
		}
		b.WriteString(part.Text)
	}
	return b.String(), nil
}

// startJob checks the request's sampling fields (chat: with the chat
// defaults) and starts generating from prompt; on a bad field or a refusal
// it writes the error and returns nil.
func (w *worker) startJob(rw http.ResponseWriter, s *oaSampling, chat bool, prompt string) *job {
	g, e := s.generation(chat)
	if e != nil {
		writeError(rw, *e)
		return nil
	}
	g.delay = w.cfg.tokenDelay
	job, refusal := w.start(g, prompt)
	if refusal != nil {
		writeError(rw, *refusal)
		return nil
	}
	return job
}

func (w *worker) handleCompletions(rw http.ResponseWriter, r *http.Request) {
	var req oaCompletionRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(rw, *e)
		return
	}
	prompt, e := textOf(req.Prompt, "prompt")
	if e != nil {
		writeError(rw, *e)
		return
	}
	job := w.startJob(rw, &req.oaSampling, false, prompt)
	if job == nil {
		return
	}
	defer job.done()

	id, created, model := newID("cmpl-"), time.Now().Unix(), w.model(req.Model)
	type choice struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		Logprobs     any     `json:"logprobs"`
		FinishReason *string `json:"finish_reason"`
	}
	type body = oaBody[choice]
	if !req.Stream {
		text, finish, err := job.collect(r.Context())
		if err != nil {
			w.writeCutOff(rw, r)
			return
		}
		writeJSON(rw, http.StatusOK, body{id, "text_completion", created, model,
			[]choice{{0, text, nil, &finish}}, job.usage()})
		job.completed = true
		return
	}
	rc := sse(rw)
	finish, err := job.run(r.Context(), func(piece string) error {
		b, _ := json.Marshal(body{id, "text_completion", created, model, []choice{{0, piece, nil, nil}}, nil})
		return sseData(rw, rc, b)
	})
	if err != nil {
		return
	}
	b, _ := json.Marshal(body{id, "text_completion", created, model, []choice{{0, "", nil, &finish}}, job.usage()})
	if sseData(rw, rc, b) != nil || sseData(rw, rc, []byte("[DONE]")) != nil {
		return
	}
	job.completed = true
}

func (w *worker) handleChatCompletions(rw http.ResponseWriter, r *http.Request) {
	var req oaChatRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(rw, *e)
		return
	}
	if len(req.Messages) == 0 {
		writeError(rw, *invalid("messages must not be empty"))
		return
	}
	texts := make([]string, 0, len(req.Messages))
	for _, m := range req.Messages {
		t, e := textOf(m.Content, "content")
		if e != nil {
			writeError(rw, *e)
			return
		}
		texts = append(texts, t)
	}
	job := w.startJob(rw, &req.oaSampling, true, strings.Join(texts, "\n"))
	if job == nil {
		return
	}
	defer job.done()

	id, created, model := newID("chatcmpl-"), time.Now().Unix(), w.model(req.Model)
	type message struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content,omitempty"`
	}
	type choice struct {
		Index        int      `json:"index"`
		Message      *message `json:"message,omitempty"`
		Delta        *message `json:"delta,omitempty"`
		Logprobs     any      `json:"logprobs"`
		FinishReason *string  `json:"finish_reason"`
	}
	type body = oaBody[choice]
	if !req.Stream {
		text, finish, err := job.collect(r.Context())
		if err != nil {
			w.writeCutOff(rw, r)
			return
		}
		writeJSON(rw, http.StatusOK, body{id, "chat.completion", created, model,
			[]choice{{Message: &message{"assistant", &text}, FinishReason: &finish}}, job.usage()})
		job.completed = true
		return
	}
	rc := sse(rw)
	chunk := func(delta message, finish *string, usage *oaUsage) error {
		b, _ := json.Marshal(body{id, "chat.completion.chunk", created, model,
			[]choice{{Delta: &delta, FinishReason: finish}}, usage})
		return sseData(rw, rc, b)
	}
	empty := ""
	if chunk(message{Role: "assistant", Content: &empty}, nil, nil) != nil {
		return
	}
	finish, err := job.run(r.Context(), func(piece string) error { return chunk(message{Content: &piece}, nil, nil) })
	if err != nil {
		return
	}
	if chunk(message{}, &finish, job.usage()) != nil || sseData(rw, rc, []byte("[DONE]")) != nil {
		return
	}
	job.completed = true
}
