package llama

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/gguf"
)

// llama.cpp b4748's greedy completions (BOS prepended, 48 tokens) for the
// test model, from shared/models/README.md.
var references = []struct{ prompt, completion string }{
	{"Once upon a time", ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it,"},
	{"Lily and Ben went to the park", ". They saw a big box with a big box. They wanted to play with it. They wanted to play with the box. They wanted to play with the box.\n\"L"},
}

func loadModel(t testing.TB, threads int) *Model {
	t.Helper()
	path, err := builtinmodel.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := Load(f, Options{Threads: threads})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenizerMatchesLlamaCpp(t *testing.T) {
	m := loadModel(t, 1)
	got := m.Tok.Encode("Once upon a time", false)
	if want := []int{403, 407, 261, 378}; !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
	if got := m.Tok.Encode("Once upon a time", true); got[0] != 1 || len(got) != 5 {
		t.Fatalf("Encode with BOS = %v, want BOS 1 first", got)
	}
}

func TestTokenizerRoundTrip(t *testing.T) {
	m := loadModel(t, 1)
	for _, s := range []string{
		"Once upon a time", "Lily and Ben went to the park", "  two  spaces ", "a\nnew line\n\"quoted\"",
		"héllo wörld — ünïcödé ✓ 日本語", "", "x", "<s> not special", "\x01\x02 control bytes",
	} {
		ids := m.Tok.Encode(s, true)
		if got := m.Tok.Decode(ids); got != s {
			t.Errorf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
	}
}

func greedy(t testing.TB, m *Model, prompt string, n int) (string, []int) {
	s := m.NewSession(256)
	var b strings.Builder
	var ids []int
	_, _, err := m.Generate(context.Background(), s, m.Tok.Encode(prompt, true), n, NewSampler(SamplerParams{}),
		func(id int, piece string) error {
			ids = append(ids, id)
			b.WriteString(piece)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), ids
}

func TestGreedyMatchesLlamaCpp(t *testing.T) {
	for _, threads := range []int{1, 2} {
		m := loadModel(t, threads)
		for _, ref := range references {
			got, ids := greedy(t, m, ref.prompt, 48)
			if len(ids) != 48 {
				t.Errorf("threads=%d %q: %d tokens, want 48", threads, ref.prompt, len(ids))
			}
			if got != ref.completion {
				t.Errorf("threads=%d %q:\n got %q\nwant %q", threads, ref.prompt, got, ref.completion)
			}
		}
	}
}

func TestSamplingDeterministicUnderSeed(t *testing.T) {
	m := loadModel(t, 1)
	run := func(p SamplerParams) []int {
		var ids []int
		s := m.NewSession(128)
		_, _, err := m.Generate(context.Background(), s, m.Tok.Encode("Once upon a time", true), 40, NewSampler(p),
			func(id int, _ string) error { ids = append(ids, id); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	p := SamplerParams{Temperature: 1.0, TopK: 40, TopP: 0.95, Seed: 42}
	a, b := run(p), run(p)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different tokens:\n%v\n%v", a, b)
	}
	differ := false
	for seed := uint64(1); seed <= 5 && !differ; seed++ {
		p.Seed = seed
		differ = !slices.Equal(run(p), a)
	}
	if !differ {
		t.Fatal("five other seeds all gave the tokens of seed 42: the seed is not used")
	}
	_, greedyIDs := greedy(t, m, "Once upon a time", 40)
	if got := run(SamplerParams{Temperature: 0.8, TopK: 1, Seed: 7}); !slices.Equal(got, greedyIDs) {
		t.Fatalf("top_k 1 is not greedy: %v vs %v", got, greedyIDs)
	}
}

func TestGenerateStopsAtContextAndCancel(t *testing.T) {
	m := loadModel(t, 1)
	s := m.NewSession(10)
	n, finish, err := m.Generate(context.Background(), s, m.Tok.Encode("Once upon a time", true), 100, NewSampler(SamplerParams{}),
		func(int, string) error { return nil })
	if err != nil || finish != FinishLength || n != 10-5+1 {
		t.Fatalf("Generate in a 10-token context = %d, %q, %v; want 6, length, nil", n, finish, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, _, err = m.Generate(ctx, m.NewSession(64), m.Tok.Encode("Once", true), 100, NewSampler(SamplerParams{}),
		func(int, string) error { cancel(); return nil })
	if err != context.Canceled || n != 1 {
		t.Fatalf("cancelled Generate = %d, %v; want 1, context.Canceled", n, err)
	}
}

func BenchmarkGreedyStories260K(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(map[int]string{1: "threads=1", 2: "threads=2"}[threads], func(b *testing.B) {
			m := loadModel(b, threads)
			s := m.NewSession(256)
			prompt := m.Tok.Encode("Once upon a time", true)
			toks := 0
			cpu0 := cpuTime()
			for b.Loop() {
				n, _, err := m.Generate(context.Background(), s, prompt, 200, NewSampler(SamplerParams{}),
					func(int, string) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				toks += n
			}
			b.ReportMetric(float64(toks)/b.Elapsed().Seconds(), "tok/s")
			// CPU time says what one core does even on a loaded machine.
			b.ReportMetric(float64(toks)/(cpuTime()-cpu0).Seconds(), "tok/cpu-s")
		})
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestTokenizerByteFallback(t *testing.T) {
	m := loadModel(t, 1)
	ids := m.Tok.Encode("日", false)
	var bytesSeen []byte
	for _, id := range ids {
		if p := m.Tok.pieces[id]; strings.HasPrefix(p, "<0x") {
			bytesSeen = append(bytesSeen, m.Tok.Piece(id)[0])
		}
	}
	if string(bytesSeen) != "日" {
		t.Fatalf("Encode(日) = %v (pieces %q): want the three UTF-8 bytes as <0xNN> tokens", ids, bytesSeen)
	}
	if got := m.Tok.Decode(ids); got != "日" {
		t.Fatalf("Decode = %q", got)
	}
}

func FuzzTokenizerRoundTrip(f *testing.F) {
	m := loadModel(f, 1)
	for _, s := range []string{"Once upon a time", " a  b ", "héllo 日本語", "\x00\x7f", "<s></s>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Invalid UTF-8 is split by lead bytes as llama.cpp does, which need
		// not give the same bytes back; prompts arrive in JSON, always valid.
		if !utf8.ValidString(s) {
			return
		}
		ids := m.Tok.Encode(s, true)
		for _, id := range ids {
			if id < 0 || id >= m.Vocab {
				t.Fatalf("Encode(%q) gave token %d", s, id)
			}
		}
		if got := m.Tok.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
	})
}
