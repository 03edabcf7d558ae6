// Package client is the Go client of the hive's HTTP API v1, used by the
// CLI, the benchmarks and the tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/sse"
)

// APIError is an error response from the hive.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message)
}

// UnreachableError: the hive did not answer at all.
type UnreachableError struct {
	Base string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach rbee-hive at %s: is it running? start it with 'rbee-hive daemon' (%v)", e.Base, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Client talks to one hive. Safe for concurrent use.
type Client struct {
	Base  string // e.g. http://127.0.0.1:9200
	Token string // operator token; empty in dev mode
	HTTP  *http.Client
}

// New returns a client for base with token.
func New(base, token string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{}}
}

func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &UnreachableError{Base: c.Base, Err: err}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb apiv1.ErrorBody
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error.Code == "" {
		return &APIError{Status: resp.StatusCode, Code: "HTTP_" + strconv.Itoa(resp.StatusCode), Message: strings.TrimSpace(string(data))}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Health calls GET /health.
func (c *Client) Health(ctx context.Context) (*apiv1.Health, error) {
	var h apiv1.Health
	return &h, c.do(ctx, http.MethodGet, "/health", nil, &h)
}

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context) (*apiv1.Status, error) {
	var s apiv1.Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Spawn calls POST /v1/workers/spawn.
func (c *Client) Spawn(ctx context.Context, req *apiv1.SpawnRequest) (*apiv1.SpawnResponse, error) {
	var r apiv1.SpawnResponse
	return &r, c.do(ctx, http.MethodPost, "/v1/workers/spawn", req, &r)
}

// List calls GET /v1/workers/list.
func (c *Client) List(ctx context.Context, all bool) ([]*apiv1.WorkerInfo, error) {
	var l apiv1.WorkerList
	p := "/v1/workers/list"
	if all {
		p += "?all=true"
	}
	return l.Workers, c.do(ctx, http.MethodGet, p, nil, &l)
}

// Get calls GET /v1/workers/{id}.
func (c *Client) Get(ctx context.Context, id string) (*apiv1.WorkerInfo, error) {
	var w apiv1.WorkerInfo
	return &w, c.do(ctx, http.MethodGet, "/v1/workers/"+url.PathEscape(id), nil, &w)
}

func (c *Client) action(ctx context.Context, id, verb string) (*apiv1.StateResponse, error) {
	var r apiv1.StateResponse
	return &r, c.do(ctx, http.MethodPost, "/v1/workers/"+url.PathEscape(id)+"/"+verb, nil, &r)
}

// Stop calls POST /v1/workers/{id}/stop.
func (c *Client) Stop(ctx context.Context, id string) (*apiv1.StateResponse, error) {
	return c.action(ctx, id, "stop")
}

// Kill calls POST /v1/workers/{id}/kill.
func (c *Client) Kill(ctx context.Context, id string) (*apiv1.StateResponse, error) {
	return c.action(ctx, id, "kill")
}

// Restart calls POST /v1/workers/{id}/restart.
func (c *Client) Restart(ctx context.Context, id string) (*apiv1.StateResponse, error) {
	return c.action(ctx, id, "restart")
}

// Logs writes the worker's last tail lines to w; with follow it streams
// until the worker ends or ctx is done.
func (c *Client) Logs(ctx context.Context, id string, tail int, follow bool, w io.Writer) error {
	q := url.Values{"tail": {strconv.Itoa(tail)}}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.request(ctx, http.MethodGet, "/v1/workers/"+url.PathEscape(id)+"/logs?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ErrLagged is the end of an event stream the hive dropped because its
// reader fell behind (`event: lagged`): events were missed.
var ErrLagged = errors.New("the hive ended the event stream: this reader fell behind and missed events; " +
	"`rbee-hive worker list --all` shows every worker's state now")

// Events streams state-change events to fn until ctx is done, fn errs, or
// the stream ends. onOpen, when not nil, is called once the hive has
// accepted the stream (events from then on are delivered). A stream the
// hive dropped for lagging ends with ErrLagged.
func (c *Client) Events(ctx context.Context, onOpen func(), fn func(apiv1.Event) error) error {
	resp, err := c.request(ctx, http.MethodGet, "/v1/events", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if onOpen != nil {
		onOpen()
	}
	err = sse.Read(resp.Body, 1<<20, func(e sse.Event) error {
		if e.Name == "lagged" || e.Data == "{}" { // the hive dropped events for this stream, and ends it
			return ErrLagged
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(e.Data), &ev); err != nil {
			return nil
		}
		return fn(ev)
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	return errors.New("event stream ended")
}

// Models calls GET /v1/catalog (the model catalog).
func (c *Client) Models(ctx context.Context) ([]apiv1.ModelEntry, error) {
	var l apiv1.ModelList
	return l.Models, c.do(ctx, http.MethodGet, "/v1/catalog", nil, &l)
}

// AddModel calls POST /v1/models.
func (c *Client) AddModel(ctx context.Context, ref, path string) (*apiv1.ModelEntry, error) {
	var e apiv1.ModelEntry
	return &e, c.do(ctx, http.MethodPost, "/v1/models", apiv1.ModelAddRequest{Ref: ref, Path: path}, &e)
}

// RemoveModel calls DELETE /v1/models?ref=.
func (c *Client) RemoveModel(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/v1/models?ref="+url.QueryEscape(ref), nil, nil)
}

// WaitFor polls the worker until cond holds or ctx ends; it returns the last
// info seen.
func (c *Client) WaitFor(ctx context.Context, id string, every time.Duration, cond func(*apiv1.WorkerInfo) bool) (*apiv1.WorkerInfo, error) {
	for {
		info, err := c.Get(ctx, id)
		if err == nil && cond(info) {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-time.After(every):
		}
	}
}

// ServedModels calls GET /v1/models and returns the models the front door
// serves (OpenAI's shape, SPEC §10).
func (c *Client) ServedModels(ctx context.Context) ([]apiv1.OpenAIModel, error) {
	var l apiv1.OpenAIModelList
	return l.Data, c.do(ctx, http.MethodGet, "/v1/models", nil, &l)
}

// StreamError is an error event inside a stream that had begun.
type StreamError struct{ Message string }

func (e *StreamError) Error() string { return "the stream was cut: " + e.Message }

// Chat sends POST /v1/chat/completions with "stream":true and one user
// message, and calls fn with each piece of the answer's text as it arrives.
// It returns when the stream ends ([DONE]), fails, or ctx is done.
func (c *Client) Chat(ctx context.Context, model, prompt string, maxTokens int, fn func(string) error) error {
	body := map[string]any{
		"model":    model,
		"messages": []map[string]string{{"role": "user", "content": prompt}},
		"stream":   true,
	}
	if maxTokens > 0 {
		body["max_tokens"] = maxTokens
	}
	resp, err := c.request(ctx, http.MethodPost, "/v1/chat/completions", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	errDone := errors.New("done")
	err = sse.Read(resp.Body, 4<<20, func(e sse.Event) error {
		data := strings.TrimSpace(e.Data)
		if data == "[DONE]" {
			return errDone
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				Text string `json:"text"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return nil
		}
		if e.Name == "error" || chunk.Error != nil {
			msg := data
			if chunk.Error != nil {
				msg = chunk.Error.Message
			}
			return &StreamError{Message: msg}
		}
		for _, ch := range chunk.Choices {
			if t := ch.Delta.Content + ch.Text; t != "" {
				if err := fn(t); err != nil {
					return err
				}
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errDone):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return err
	}
	return &StreamError{Message: "it ended before [DONE]"}
}
