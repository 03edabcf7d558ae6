package refworker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rbee/rbee-hive/internal/llama"
)

// generation is what one request asks the model for.
type generation struct {
	maxTokens int
	sampler   llama.SamplerParams
	delay     time.Duration // LLMW_FAKE_TOKEN_DELAY_MS / token_delay_ms: wait before each token
}

// newGeneration checks a request's sampling fields. Nil fields take the
// defaults: 16 tokens; temperature defTemp (0: greedy); no top-k or top-p;
// a seed from the clock.
func newGeneration(maxTokens *int, temp *float64, topK *int, topP *float64, seed *int64, defTemp float64) (generation, *apiError) {
	g := generation{maxTokens: defaultMaxTokens, sampler: llama.SamplerParams{Temperature: defTemp, Seed: uint64(time.Now().UnixNano())}}
	if maxTokens != nil {
		g.maxTokens = *maxTokens
	}
	if g.maxTokens < 0 || g.maxTokens > maxMaxTokens {
		return g, invalid("max_tokens must be 0..%d", maxMaxTokens)
	}
	if temp != nil {
		if *temp < 0 || *temp > 100 || math.IsNaN(*temp) {
			return g, invalid("temperature must be 0..100")
		}
		g.sampler.Temperature = *temp
	}
	if topK != nil {
		if *topK < 0 {
			return g, invalid("top_k must not be negative")
		}
		g.sampler.TopK = *topK
	}
	if topP != nil {
		if *topP < 0 || *topP > 1 || math.IsNaN(*topP) {
			return g, invalid("top_p must be 0..1")
		}
		g.sampler.TopP = *topP
	}
	if seed != nil {
		g.sampler.Seed = uint64(*seed)
	}
	return g, nil
}

// job is one admitted request: a slot, its session and the tokenized prompt.
type job struct {
	w         *worker
	g         generation
	prompt    []int
	release   func(bool)
	completed bool // set by the handler when the answer went out whole

	// Filled in by run.
	promptTokens, completionTokens int
	finish                         string
}

// start tokenizes prompt and takes a slot; a refusal is the error to answer
// with. The caller must call done.
func (w *worker) start(g generation, prompt string) (*job, *apiError) {
	w.mu.Lock()
	eng := w.eng
	w.mu.Unlock()
	if eng == nil {
		return nil, &errNotReady
	}
	ids := eng.model.Tok.Encode(prompt, true)
	if len(ids) >= eng.ctx {
		return nil, invalid("the prompt is %d tokens; the context holds %d", len(ids), eng.ctx)
	}
	release, refusal := w.acquire()
	if refusal != nil {
		return nil, refusal
	}
	return &job{w: w, g: g, prompt: ids, release: release, promptTokens: len(ids)}, nil
}

func (j *job) done() { j.release(j.completed) }

// run generates, calling emit with each token's text. It stops at once when
// ctx (the client) or the worker ends, or emit fails, and returns the error.
func (j *job) run(ctx context.Context, emit func(piece string) error) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(j.w.ctx, cancel)
	defer stop()

	eng := j.w.eng
	s := eng.session()
	defer eng.put(s)
	var t *time.Timer
	n, finish, err := eng.model.Generate(ctx, s, j.prompt, j.g.maxTokens, llama.NewSampler(j.g.sampler),
		func(_ int, piece string) error {
			if d := j.g.delay; d > 0 {
				if t == nil {
					t = time.NewTimer(d)
				} else {
					t.Reset(d)
				}
				select {
				case <-t.C:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return emit(piece)
		})
	if t != nil {
		t.Stop()
	}
	j.completionTokens, j.finish = n, finish
	if err != nil && !errors.Is(err, context.Canceled) {
		j.w.log.Warn(fmt.Sprintf("generation stopped: %v", err))
	}
	return finish, err
}
