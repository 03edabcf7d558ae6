package refworker

import "hash/fnv"

// vocab is the generator's whole vocabulary.
var vocab = [...]string{
	"the", "a", "bee", "hive", "honey", "worker", "queen", "flower",
	"pollen", "wax", "comb", "buzz", "flies", "makes", "sweet", "golden",
	"busy", "small", "many", "field", "summer", "sun", "light", "warm",
	"dance", "nectar", "home", "swarm", "gathers", "returns", "and", "of",
}

// generator is the worker's small deterministic token source: a splitmix64
// stream seeded from the FNV-1a hash of the prompt. Not safe for concurrent
// use; each request has its own.
type generator struct {
	state uint64
	index int
}

func newGenerator(prompt string) *generator {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	return &generator{state: h.Sum64()}
}

// next returns the next token: a word, with a leading space after the first,
// and a full stop every so often.
func (g *generator) next() string {
	g.state += 0x9e3779b97f4a7c15
	z := g.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	tok := vocab[z%uint64(len(vocab))]
	if g.index > 0 {
		tok = " " + tok
	}
	if z>>59 == 0 { // about one token in 32
		tok += "."
	}
	g.index++
	return tok
}

// Tokens returns the first n tokens the worker streams for prompt. The same
// prompt always gives the same tokens. It does not block and is safe for
// concurrent use.
func Tokens(prompt string, n int) []string {
	g := newGenerator(prompt)
	out := make([]string, 0, max(n, 0))
	for range n {
		out = append(out, g.next())
	}
	return out
}
