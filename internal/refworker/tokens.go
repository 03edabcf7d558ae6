package refworker

import (
	"context"
	"sync"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/gguf"
	"github.com/rbee/rbee-hive/internal/llama"
)

var builtin struct {
	once  sync.Once
	model *llama.Model
	err   error
}

// builtinModel returns the embedded stories260K model, parsed from the
// binary's own bytes on first use.
func builtinModel() (*llama.Model, error) {
	builtin.once.Do(func() {
		f, err := gguf.Parse(builtinmodel.Bytes())
		if err != nil {
			builtin.err = err
			return
		}
		builtin.model, builtin.err = llama.Load(f, llama.Options{})
	})
	return builtin.model, builtin.err
}

// Tokens returns the token texts the worker streams for prompt with greedy
// decoding (the default of /v1/inference) when it serves the built-in
// stories260K model: at most n, fewer when the model ends the text first.
// Safe for concurrent use; it panics only if the embedded model is broken.
func Tokens(prompt string, n int) []string {
	m, err := builtinModel()
	if err != nil {
		panic(err)
	}
	var out []string
	_, _, err = m.Generate(context.Background(), m.NewSession(max(m.ContextLength, defaultCtx)), m.Tok.Encode(prompt, true), n,
		llama.NewSampler(llama.SamplerParams{}), func(_ int, piece string) error {
			out = append(out, piece)
			return nil
		})
	if err != nil {
		panic(err)
	}
	return out
}
