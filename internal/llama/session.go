package llama

import (
	"errors"
	"fmt"
	"math"
)

// ErrContextFull is returned when a session has no room for another token.
var ErrContextFull = errors.New("llama: context is full")

// Session is one sequence being decoded: its KV cache and scratch buffers.
// Not safe for concurrent use; the model may serve many sessions at once.
type Session struct {
	m   *Model
	ctx int
	pos int
	// Tokens are the tokens evaluated so far.
	Tokens []int

	kCache, vCache [][]float32 // per layer: ctx × kvDim, values rounded to f16

	x, xb, xb2, q, k, v, hb, hb2, att, logits []float32
	px                                        prepared // matmul scratch
}

// NewSession returns a session with room for ctx tokens. Its KV cache is
// allocated here (about 2 × layers × ctx × kv width × 4 bytes).
func (m *Model) NewSession(ctx int) *Session {
	kvDim := m.KVHeads * m.HeadDim
	s := &Session{m: m, ctx: ctx}
	s.kCache = make([][]float32, m.Layers)
	s.vCache = make([][]float32, m.Layers)
	for i := range m.Layers {
		s.kCache[i] = make([]float32, ctx*kvDim)
		s.vCache[i] = make([]float32, ctx*kvDim)
	}
	s.x = make([]float32, m.Dim)
	s.xb = make([]float32, m.Dim)
	s.xb2 = make([]float32, m.Dim)
	s.q = make([]float32, m.Dim)
	s.k = make([]float32, kvDim)
	s.v = make([]float32, kvDim)
	s.hb = make([]float32, m.Hidden)
	s.hb2 = make([]float32, m.Hidden)
	s.att = make([]float32, ctx)
	s.logits = make([]float32, m.Vocab)
	return s
}

// Context returns the session's capacity in tokens.
func (s *Session) Context() int { return s.ctx }

// Pos returns the number of tokens evaluated.
func (s *Session) Pos() int { return s.pos }

// Reset forgets every token, keeping the buffers.
func (s *Session) Reset() {
	s.pos = 0
	s.Tokens = s.Tokens[:0]
}

// Eval runs tokens through the model one by one and returns the logits after
// the last. The slice is reused by the next call.
func (s *Session) Eval(tokens []int) ([]float32, error) {
	for _, t := range tokens {
		if t < 0 || t >= s.m.Vocab {
			return nil, fmt.Errorf("llama: token %d outside the %d-token vocabulary", t, s.m.Vocab)
		}
	}
	if s.pos+len(tokens) > s.ctx {
		return nil, ErrContextFull
	}
	for _, t := range tokens {
		s.forward(t)
	}
	return s.logits, nil
}

// rope rotates adjacent pairs (llama.cpp's normal rope) of each head's first
// RopeDim values by pos × base^(-2i/RopeDim), the angle computed as ggml
// does: a running float32 product.
func (m *Model) rope(vec []float32, heads, pos int) {
	thetaScale := float32(math.Pow(float64(m.RopeBase), -2.0/float64(m.RopeDim)))
	theta := float32(pos)
	for i := 0; i < m.RopeDim; i += 2 {
		c := float32(math.Cos(float64(theta)))
		sn := float32(math.Sin(float64(theta)))
		for h := range heads {
			o := h*m.HeadDim + i
			x0, x1 := vec[o], vec[o+1]
			vec[o] = x0*c - x1*sn
			vec[o+1] = x0*sn + x1*c
		}
		theta *= thetaScale
	}
}

func (s *Session) forward(token int) {
	m := s.m
	kvDim := m.KVHeads * m.HeadDim
	group := m.Heads / m.KVHeads
	pos := s.pos
	m.embd.row(token, s.x)
	scale := float32(1 / math.Sqrt(float64(m.HeadDim)))

	for li := range m.layers {
		l := &m.layers[li]
		rmsNorm(s.xb, s.x, l.attnNorm, m.NormEps)
		m.matmul(l.wq, s.xb, s.q, &s.px)
		m.matmul(l.wk, s.xb, s.k, &s.px)
		m.matmul(l.wv, s.xb, s.v, &s.px)
		m.rope(s.q, m.Heads, pos)
		m.rope(s.k, m.KVHeads, pos)
		kc, vc := s.kCache[li], s.vCache[li]
		for i := range kvDim {
			kc[pos*kvDim+i] = roundF16(s.k[i])
			vc[pos*kvDim+i] = roundF16(s.v[i])
		}
		// Q meets the f16 keys in half precision, as ggml converts it.
		for i := range s.q {
			s.q[i] = roundF16(s.q[i])
		}
		for h := range m.Heads {
			kvh := h / group
			q := s.q[h*m.HeadDim : (h+1)*m.HeadDim]
			att := s.att[:pos+1]
			maxv := float32(math.Inf(-1))
			for t := 0; t <= pos; t++ {
				k := kc[t*kvDim+kvh*m.HeadDim : t*kvDim+(kvh+1)*m.HeadDim]
				a := dot(q, k) * scale
				att[t] = a
				maxv = max(maxv, a)
			}
			var sum float64
			for t := range att {
				e := float32(math.Exp(float64(att[t] - maxv)))
				att[t] = e
				sum += float64(e)
			}
			inv := float32(1 / sum)
			out := s.xb[h*m.HeadDim : (h+1)*m.HeadDim]
			clear(out)
			for t := range att {
				p := roundF16(att[t] * inv)
				v := vc[t*kvDim+kvh*m.HeadDim : t*kvDim+(kvh+1)*m.HeadDim]
				for i := range out {
					out[i] += p * v[i]
				}
			}
		}
		m.matmul(l.wo, s.xb, s.xb2, &s.px)
		for i := range s.x {
			s.x[i] += s.xb2[i]
		}
		rmsNorm(s.xb, s.x, l.ffnNorm, m.NormEps)
		m.matmul(l.wGate, s.xb, s.hb, &s.px)
		m.matmul(l.wUp, s.xb, s.hb2, &s.px)
		for i := range s.hb {
			g := s.hb[i]
			s.hb[i] = g / (1 + float32(math.Exp(float64(-g)))) * s.hb2[i]
		}
		m.matmul(l.wDown, s.hb, s.xb, &s.px)
		for i := range s.x {
			s.x[i] += s.xb[i]
		}
	}
	rmsNorm(s.x, s.x, m.norm, m.NormEps)
	m.matmul(m.out, s.x, s.logits, &s.px)
	s.pos++
	s.Tokens = append(s.Tokens, token)
}
