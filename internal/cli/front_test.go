package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A stand-in for the front door's routes with the shapes of SPEC §10, until
// the e2e tests can run `models` and `run` against the real daemon.
func frontDoor(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"object":"list","data":[
			{"id":"stories","object":"model","owned_by":"rbee-hive","created":1,"rbee":{"workers":{"idle":1,"busy":2,"loading":0},"in_flight":3,"queued":4}},
			{"id":"cold","object":"model","owned_by":"rbee-hive","created":1,"rbee":{"workers":{},"in_flight":0,"queued":0}}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Model    string `json:"model"`
			Stream   bool   `json:"stream"`
			MaxTok   int    `json:"max_tokens"`
			Messages []struct{ Role, Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || !body.Stream || len(body.Messages) != 1 || body.Messages[0].Content != "Once" {
			t.Errorf("chat body %+v %v", body, err)
		}
		if body.Model == "nope" {
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"MODEL_NOT_FOUND","message":"no model nope; known: stories","type":"invalid_request_error"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, tok := range []string{"Once", " upon\n", "\x1b[2J", " a time"} {
			b, _ := json.Marshal(tok)
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%s}}]}\n\n", b)
			w.(http.Flusher).Flush()
		}
		if body.Model == "cut" {
			io.WriteString(w, "event: error\ndata: {\"error\":{\"message\":\"worker crashed\"}}\n\n")
			return
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestModelsTable(t *testing.T) {
	s := frontDoor(t)
	env := map[string]string{"RBEE_HIVE_URL": s.URL}
	out, errb, code := runMain(t, env, "models")
	if code != 0 || !strings.Contains(out, "MODEL") || !regexpMatch(`(?m)^stories +busy 2, idle 1 +3 +4$`, out) ||
		!regexpMatch(`(?m)^cold +none +0 +0$`, out) {
		t.Fatalf("models: %d %q %q", code, out, errb)
	}
	out, _, code = runMain(t, env, "models", "-o", "json")
	var l struct {
		Object string
		Data   []struct{ ID string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l.Object != "list" || len(l.Data) != 2 {
		t.Fatalf("models json: %q", out)
	}
}

func TestRunStreamsTheAnswer(t *testing.T) {
	s := frontDoor(t)
	env := map[string]string{"RBEE_HIVE_URL": s.URL}
	out, errb, code := runMain(t, env, "run", "stories", "Once")
	if code != 0 || out != "Once upon\n\\x1b[2J a time\n" {
		t.Fatalf("run: %d %q %q", code, out, errb)
	}
	out, _, code = runMain(t, env, "run", "stories", "Once", "-o", "json")
	if code != 0 || !strings.Contains(out, `"text": "Once upon\n\u001b[2J a time"`) {
		t.Fatalf("run json: %d %q", code, out)
	}
	_, errb, code = runMain(t, env, "run", "nope", "Once")
	if code != 1 || !strings.Contains(errb, "MODEL_NOT_FOUND") || !strings.Contains(errb, "known: stories") {
		t.Fatalf("unknown model: %d %q", code, errb)
	}
	out, errb, code = runMain(t, env, "run", "cut", "Once")
	if code != 1 || !strings.Contains(errb, "the stream was cut: worker crashed") || !strings.HasPrefix(out, "Once upon") {
		t.Fatalf("cut stream: %d %q %q", code, out, errb)
	}
}
