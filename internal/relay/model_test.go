package relay

import (
	"encoding/json"
	"testing"
)

// refModel is what json.Unmarshal reads (the front door's and the queen's
// way before Model).
func refModel(body []byte) (string, error) {
	var head struct {
		Model json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return "", err
	}
	var s string
	if json.Unmarshal(head.Model, &s) != nil {
		return "", nil
	}
	return s, nil
}

var modelBodies = []string{
	`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}`,
	` { "messages" : [ {"model":"inner"} ] , "model" : "outer" } `,
	`{"model":"a","model":"b"}`,
	`{"MODEL":"upper"}`,
	`{"Model":"x","model":"y","mODEL":"z"}`,
	`{"mod\u0065l":"escaped key"}`,
	`{"model":"tab\there \"q\" \u00e9 é"}`,
	`{"model":12}`,
	`{"model":null}`,
	`{"model":{"name":"m"}}`,
	`{"model":["m"]}`,
	`{"model":true}`,
	`{}`,
	`{"x":"}","y":"{\"model\":\"no\"}","model":"yes"}`,
	`{"n":-1.5e3,"t":true,"f":false,"z":null,"model":"after literals"}`,
	`[{"model":"m"}]`,
	`"model"`,
	`null`,
	`12`,
	`{"model":"m"`,
	`{"model":"m"} trailing`,
	``,
	`{"model":"m",}`,
	"{\"model\":\"bad \xff utf8\"}",
}

func TestModelReadsWhatEncodingJSONReads(t *testing.T) {
	for _, b := range modelBodies {
		got, gerr := Model([]byte(b))
		want, werr := refModel([]byte(b))
		if got != want || (gerr == nil) != (werr == nil) {
			t.Errorf("Model(%s) = %q, %v; encoding/json: %q, %v", b, got, gerr, want, werr)
		}
	}
}

func FuzzModel(f *testing.F) {
	for _, b := range modelBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := Model(b)
		want, werr := refModel(b)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Errorf("Model(%q) = %q, %v; encoding/json: %q, %v", b, got, gerr, want, werr)
		}
	})
}

func BenchmarkModel(b *testing.B) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}`)
	b.Run("relay.Model", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Model(body)
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = refModel(body)
		}
	})
}
