package llama

import (
	"container/heap"
	"fmt"
	"strconv"
	"strings"

	"github.com/rbee/rbee-hive/internal/gguf"
)

// Token types of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
const (
	tokNormal      = 1
	tokUnknown     = 2
	tokControl     = 3
	tokUserDefined = 4
	tokUnused      = 5
	tokByte        = 6
)

// Tokenizer is llama.cpp's SentencePiece ("llama") tokenizer built from a
// GGUF vocabulary: spaces become ▁ with one ▁ put in front, the text is
// split into UTF-8 characters, adjacent pieces are merged greedily by the
// vocabulary's score (the highest-scoring pair first, the leftmost among
// equals), and characters the vocabulary lacks fall back to <0xNN> byte
// tokens. Safe for concurrent use.
type Tokenizer struct {
	pieces     []string
	scores     []float32
	types      []int32
	ids        map[string]int
	byteTokens [256]int // -1 when the vocabulary lacks <0xNN>

	BOS, EOS, UNK  int
	AddBOS         bool
	AddSpacePrefix bool
}

const spaceMarker = "▁"

func newTokenizer(f *gguf.File) (*Tokenizer, error) {
	if m, _ := f.String("tokenizer.ggml.model"); m != "llama" {
		return nil, fmt.Errorf("tokenizer.ggml.model is %q; only the SentencePiece \"llama\" tokenizer is supported", m)
	}
	pieces, ok := f.Strings("tokenizer.ggml.tokens")
	if !ok || len(pieces) == 0 {
		return nil, fmt.Errorf("tokenizer.ggml.tokens is missing")
	}
	n := len(pieces)
	t := &Tokenizer{pieces: pieces, ids: make(map[string]int, n), AddBOS: true, AddSpacePrefix: true}
	t.scores = make([]float32, n)
	if s, ok := f.Floats("tokenizer.ggml.scores"); ok {
		if len(s) != n {
			return nil, fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(s), n)
		}
		t.scores = s
	}
	t.types = make([]int32, n)
	for i := range t.types {
		t.types[i] = tokNormal
	}
	if ty, ok := f.Ints("tokenizer.ggml.token_type"); ok {
		if len(ty) != n {
			return nil, fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(ty), n)
		}
		for i, v := range ty {
			t.types[i] = int32(v)
		}
	}
	for i, p := range pieces {
		if _, dup := t.ids[p]; !dup {
			t.ids[p] = i
		}
	}
	for b := range 256 {
		t.byteTokens[b] = -1
		if id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteTokens[b] = id
		}
	}
	id := func(key string, def int) (int, error) {
		v, ok := f.Uint(key)
		if !ok {
			return def, nil
		}
		if v == 0xffffffff {
			return -1, nil
		}
		if v >= uint64(n) {
			return 0, fmt.Errorf("%s is %d, outside the %d-token vocabulary", key, v, n)
		}
		return int(v), nil
	}
	var err error
	if t.BOS, err = id("tokenizer.ggml.bos_token_id", 1); err != nil {
		return nil, err
	}
	if t.EOS, err = id("tokenizer.ggml.eos_token_id", 2); err != nil {
		return nil, err
	}
	if t.UNK, err = id("tokenizer.ggml.unknown_token_id", 0); err != nil {
		return nil, err
	}
	if v, ok := f.Bool("tokenizer.ggml.add_bos_token"); ok {
		t.AddBOS = v
	}
	if v, ok := f.Bool("tokenizer.ggml.add_space_prefix"); ok {
		t.AddSpacePrefix = v
	}
	return t, nil
}

// VocabSize returns the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

type symbol struct {
	prev, next int
	text       string // the whole text; this symbol is text[start:start+n]
	start, n   int
}

type bigram struct {
	left, right int
	score       float32
	size        int
}

type bigramQueue []bigram

func (q bigramQueue) Len() int { return len(q) }
func (q bigramQueue) Less(i, j int) bool {
	return q[i].score > q[j].score || (q[i].score == q[j].score && q[i].left < q[j].left)
}
func (q bigramQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bigramQueue) Push(x any)   { *q = append(*q, x.(bigram)) }
func (q *bigramQueue) Pop() any {
	old := *q
	b := old[len(old)-1]
	*q = old[:len(old)-1]
	return b
}

// Encode tokenizes text. With bos (and the vocabulary's add_bos), the BOS
// token comes first. Special tokens written in the text are not parsed:
// "<s>" is three characters (llama-server parses them; a worker that takes
// prompts from anyone should not let them forge control tokens).
func (t *Tokenizer) Encode(text string, bos bool) []int {
	var out []int
	if bos && t.AddBOS && t.BOS >= 0 {
		out = append(out, t.BOS)
	}
	if text == "" {
		return out
	}
	if t.AddSpacePrefix {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", spaceMarker)

	syms := make([]symbol, 0, len(text))
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		syms = append(syms, symbol{prev: len(syms) - 1, next: len(syms) + 1, text: text, start: off, n: n})
		off += n
	}
	syms[len(syms)-1].next = -1

	revMerge := map[string][2]int{}
	q := &bigramQueue{}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		s := text[syms[left].start : syms[right].start+syms[right].n]
		id, ok := t.ids[s]
		if !ok {
			return
		}
		heap.Push(q, bigram{left: left, right: right, score: t.scores[id], size: len(s)})
		revMerge[s] = [2]int{left, right}
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for q.Len() > 0 {
		b := heap.Pop(q).(bigram)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // outdated
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}

	var resegment func(start, n int)
	resegment = func(start, n int) {
		s := text[start : start+n]
		if id, ok := t.ids[s]; ok {
			out = append(out, id)
			return
		}
		if p, ok := revMerge[s]; ok {
			resegment(syms[p[0]].start, syms[p[0]].n)
			resegment(syms[p[1]].start, syms[p[1]].n)
			return
		}
		for i := 0; i < len(s); i++ {
			if id := t.byteTokens[s[i]]; id >= 0 {
				out = append(out, id)
			} else if t.UNK >= 0 {
				out = append(out, t.UNK)
			}
		}
	}
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		resegment(syms[i].start, syms[i].n)
	}
	return out
}

// Piece returns the text of one token as llama.cpp's token_to_piece does:
// ▁ becomes a space, byte tokens become their byte, control tokens are
// empty.
func (t *Tokenizer) Piece(id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	p := t.pieces[id]
	switch t.types[id] {
	case tokNormal, tokUserDefined:
		return strings.ReplaceAll(p, spaceMarker, " ")
	case tokUnknown:
		return "\u2585" // ▅, as llama.cpp writes an unknown token
	case tokByte:
		if len(p) == 6 && strings.HasPrefix(p, "<0x") && p[5] == '>' {
			if b, err := strconv.ParseUint(p[3:5], 16, 8); err == nil {
				return string([]byte{byte(b)})
			}
		}
		return ""
	}
	return "" // control, unused
}

// Decode returns the text of tokens: their pieces joined, with the one space
// the encoder put in front removed when the first token begins with it.
func (t *Tokenizer) Decode(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(t.Piece(id))
	}
	s := b.String()
	if t.AddSpacePrefix && len(ids) > 0 {
		first := 0
		if ids[0] == t.BOS && len(ids) > 1 {
			first = 1
		}
		if ids[first] != t.BOS && strings.HasPrefix(t.Piece(ids[first]), " ") {
			s = strings.TrimPrefix(s, " ")
		}
	}
	return s
}

// utf8Len is the length of a UTF-8 sequence judged by its first byte alone,
// as llama.cpp's unicode_len_utf8 does.
func utf8Len(b byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[b>>4]
}
