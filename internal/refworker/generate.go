package refworker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/rbee/rbee-hive/internal/llama"
)

// generation is what one request asks the model for.
type generation struct {
	maxTokens int
	sampler   llama.SamplerParams
	delay     time.Duration // LLMW_FAKE_TOKEN_DELAY_MS / token_delay_ms: wait before each token
	// stop ends generation, with finish reason "stop", where the text
	// would contain one of these strings; the text ends before it.
	stop []string
}

// errStopString ends generation at a stop string.
var errStopString = errors.New("stop string")

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
	free      func()     // gives the slot back; run calls it when generation ends
	finish    func(bool) // ends the request
	completed bool       // set by the handler when the answer went out whole

	// Filled in by run.
	promptTokens, completionTokens int
	finishReason                   string
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
	free, finish, refusal := w.acquireSlot()
	if refusal != nil {
		return nil, refusal
	}
	return &job{w: w, g: g, prompt: ids, free: free, finish: finish, promptTokens: len(ids)}, nil
}

func (j *job) done() { j.finish(j.completed) }

// run generates, calling emit with each token's text. It stops at once when
// ctx (the client) or the worker ends, or emit fails, and returns the error.
func (j *job) run(ctx context.Context, emit func(piece string) error) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(j.w.ctx, cancel)
	defer stop()

	eng := j.w.eng
	s := eng.session()
	defer j.free()
	defer eng.put(s)
	var t *time.Timer
	var pending string // text held back while it may be the start of a stop string
	n, finish, err := eng.model.Generate(ctx, s, j.prompt, j.g.maxTokens, llama.NewSampler(j.g.sampler),
		func(_ int, piece string) error {
			if len(j.g.stop) > 0 {
				pending += piece
				if i := firstStop(pending, j.g.stop); i >= 0 {
					if i > 0 {
						if err := emit(pending[:i]); err != nil {
							return err
						}
					}
					return errStopString
				}
				keep := heldBack(pending, j.g.stop)
				piece, pending = pending[:len(pending)-keep], pending[len(pending)-keep:]
				if piece == "" {
					return nil
				}
			}
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
	switch {
	case errors.Is(err, errStopString):
		n, finish, err = n+1, llama.FinishStop, nil
	case err == nil && pending != "":
		err = emit(pending)
	}
	j.completionTokens, j.finishReason = n, finish
	if err != nil {
		j.w.log.Info(fmt.Sprintf("generation stopped after %d tokens: %v", n, err))
	}
	return finish, err
}

// firstStop returns the index in s of the earliest stop string, or -1.
func firstStop(s string, stops []string) int {
	best := -1
	for _, st := range stops {
		if i := strings.Index(s, st); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// heldBack returns the length of the longest end of s that is the start of
// a stop string: text that must wait for the next token.
func heldBack(s string, stops []string) int {
	keep := 0
	for _, st := range stops {
		for n := min(len(st)-1, len(s)); n > keep; n-- {
			if strings.HasSuffix(s, st[:n]) {
				keep = n
				break
			}
		}
	}
	return keep
}
