package llama

import (
	"math"
	"math/rand/v2"
	"sort"
)

// SamplerParams choose how the next token is picked. The zero value is
// greedy.
type SamplerParams struct {
	// Temperature <= 0 is greedy: the most likely token (the lowest id
	// among equals).
	Temperature float64
	// TopK > 0 keeps only the K most likely tokens.
	TopK int
	// TopP in (0,1) keeps the smallest set of most likely tokens whose
	// probabilities add up to at least P.
	TopP float64
	// Seed seeds the random choice; the same seed, prompt and parameters
	// give the same tokens.
	Seed uint64
}

// Sampler picks tokens from logits. Not safe for concurrent use.
type Sampler struct {
	p    SamplerParams
	rng  *rand.Rand
	cand []cand
}

type cand struct {
	id int
	v  float32
}

// NewSampler returns a sampler for p.
func NewSampler(p SamplerParams) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}
}

// Sample returns the next token for logits (which it does not modify).
// Steps follow llama.cpp's default chain: top-k, top-p, temperature, then a
// draw from the softmax.
func (s *Sampler) Sample(logits []float32) int {
	if s.p.Temperature <= 0 || s.p.TopK == 1 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	c := s.cand[:0]
	for i, v := range logits {
		c = append(c, cand{i, v})
	}
	sort.SliceStable(c, func(i, j int) bool { return c[i].v > c[j].v })
	if k := s.p.TopK; k > 0 && k < len(c) {
		c = c[:k]
	}
	if p := s.p.TopP; p > 0 && p < 1 {
		probs := softmax(c, 1)
		var cum float64
		for i, pr := range probs {
			cum += pr
			if cum >= p {
				c = c[:i+1]
				break
			}
		}
	}
	probs := softmax(c, s.p.Temperature)
	r := s.rng.Float64()
	var cum float64
	for i, pr := range probs {
		cum += pr
		if r < cum {
			s.cand = c
			return c[i].id
		}
	}
	s.cand = c
	return c[len(c)-1].id
}

// softmax of c's values divided by temp (c sorted, highest first).
func softmax(c []cand, temp float64) []float64 {
	out := make([]float64, len(c))
	var sum float64
	for i, x := range c {
		out[i] = math.Exp((float64(x.v) - float64(c[0].v)) / temp)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}
