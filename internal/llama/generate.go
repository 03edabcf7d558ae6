package llama

import (
	"context"
	"errors"
)

// Finish reasons, as the OpenAI API names them.
const (
	FinishLength = "length" // max tokens reached, or the context is full
	FinishStop   = "stop"   // the model produced its end-of-sequence token
)

// Generate evaluates prompt (token ids, BOS included if wanted) in s, which
// is reset first, then samples up to maxTokens tokens, calling emit with each
// token and its text. It stops early, with FinishStop, at the end-of-sequence
// token (not emitted), and with FinishLength when the context is full. An
// error from emit, or ctx ending, stops generation at once and is returned.
func (m *Model) Generate(ctx context.Context, s *Session, prompt []int, maxTokens int, sp *Sampler, emit func(id int, piece string) error) (n int, finish string, err error) {
	s.Reset()
	if maxTokens <= 0 {
		return 0, FinishLength, nil
	}
	if len(prompt) == 0 {
		prompt = []int{m.Tok.BOS}
	}
	if len(prompt) > s.ctx {
		return 0, "", ErrContextFull
	}
	logits, err := s.Eval(prompt)
	if err != nil {
		return 0, "", err
	}
	for n < maxTokens {
		if err := ctx.Err(); err != nil {
			return n, "", err
		}
		id := sp.Sample(logits)
		if id == m.Tok.EOS {
			return n, FinishStop, nil
		}
		if err := emit(id, m.Tok.Piece(id)); err != nil {
			return n, "", err
		}
		n++
		if n == maxTokens {
			break
		}
		if s.pos >= s.ctx {
			return n, FinishLength, nil
		}
		if logits, err = s.Eval([]int{id}); err != nil {
			if errors.Is(err, ErrContextFull) {
				return n, FinishLength, nil
			}
			return n, "", err
		}
	}
	return n, FinishLength, nil
}
