package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/gguf"
	"github.com/rbee/rbee-hive/internal/llama"
)

// The model section (--only model): the reference worker running the
// built-in stories260K model. Generation speed (greedy, one slot, 1 and 2
// threads) in process and through a standalone worker's /v1/completions,
// the worker's launch → ready time and its idle RSS with the model loaded.
//
// No llama.cpp figure: Debian (bookworm) has no llama.cpp package, and this
// machine cannot fetch its sources, so only ours is measured; the method is
// in the notes.

const (
	modelSection   = "model"
	modelPrompt    = "Once upon a time"
	modelGenTokens = 256
)

func (b *Bench) model() error {
	dir, err := os.MkdirTemp(b.o.TmpDir, "hivebench-model-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path, err := builtinmodel.WriteTo(dir)
	if err != nil {
		return err
	}
	trials := 10
	if b.o.Smoke {
		trials = 2
	}
	sec := Result{Section: modelSection, System: "rbee-hive", Unit: "tokens/s"}
	for _, threads := range []int{1, 2} {
		wall, cpu, err := engineTokensPerSecond(path, threads, trials)
		if err != nil {
			return err
		}
		b.add(sec, fmt.Sprintf("stories260K greedy, in process, %d thread(s)", threads), wall, nil,
			fmt.Sprintf("wall clock; %d tokens after a 5-token prompt, one slot", modelGenTokens))
		var t *Target
		if threads == 1 {
			t = target("median", 1, "median < 1 ms (≥ 1000 tokens/s on one core)")
		}
		ms := make([]float64, len(cpu))
		for i, v := range cpu {
			ms[i] = 1000 / v
		}
		b.add(Result{Section: modelSection, Unit: "CPU ms/token"}, fmt.Sprintf("stories260K greedy, in process, %d thread(s), CPU time per token", threads), ms, t,
			"process CPU time (user+sys) per generated token: what one core does, whatever the machine's load")
	}
	for _, threads := range []int{1, 2} {
		if err := b.modelWorker(path, threads, trials); err != nil {
			return err
		}
	}
	b.R.Notes = append(b.R.Notes, fmt.Sprintf("Model section: tokens/s = generated tokens / wall time of one greedy generation of %d tokens "+
		"from %q (BOS + 4 prompt tokens evaluated first, counted in the time), in process (package llama) and through a standalone "+
		"llm-worker-rbee's POST /v1/completions (client-side wall time, HTTP included). No llama.cpp figure side by side: Debian has no "+
		"llama.cpp package (apt-cache policy llama.cpp: none) and sources cannot be fetched here.", modelGenTokens, modelPrompt))
	return nil
}

// engineTokensPerSecond generates in process, trials times, and returns
// tokens per wall-clock second and per CPU second of this process.
func engineTokensPerSecond(path string, threads, trials int) (wall, cpu []float64, err error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	m, err := llama.Load(f, llama.Options{Threads: threads})
	if err != nil {
		return nil, nil, err
	}
	s := m.NewSession(512)
	prompt := m.Tok.Encode(modelPrompt, true)
	for i := range trials + 1 { // the first is a warm-up
		t0, c0 := time.Now(), selfCPU()
		n, _, err := m.Generate(context.Background(), s, prompt, modelGenTokens, llama.NewSampler(llama.SamplerParams{}),
			func(int, string) error { return nil })
		if err != nil {
			return nil, nil, err
		}
		if i > 0 {
			wall = append(wall, float64(n)/time.Since(t0).Seconds())
			cpu = append(cpu, float64(n)/(selfCPU()-c0).Seconds())
		}
	}
	return wall, cpu, nil
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// modelWorker starts a standalone worker with --threads threads and
// measures launch → ready, tokens/s through /v1/completions and idle RSS.
func (b *Bench) modelWorker(path string, threads, trials int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(b.o.Bins.Worker, "--worker-id", "bench-model", "--model", path, "--model-ref", "file:"+path,
		"--port", strconv.Itoa(port), "--threads", strconv.Itoa(threads))
	cmd.Stderr = &stderr
	cmd.Dir = filepath.Dir(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: 30 * time.Second}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	ready := time.Duration(0)
	for deadline := time.Now().Add(30 * time.Second); ready == 0; {
		if time.Now().After(deadline) {
			return fmt.Errorf("worker not ready after 30 s: %s", stderr.String())
		}
		if resp, err := client.Get(url + "/v1/ready"); err == nil {
			var r struct{ Ready bool }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Ready {
				ready = time.Since(t0)
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	name := fmt.Sprintf("worker %d thread(s)", threads)
	b.add(Result{Section: modelSection, Unit: "ms"}, "launch → ready (/v1/ready true), "+name,
		[]float64{float64(ready) / float64(time.Millisecond)}, nil, "process start, bind, mmap, tensor read, polled every 1 ms")

	body := fmt.Sprintf(`{"prompt":%q,"max_tokens":%d,"temperature":0}`, modelPrompt, modelGenTokens)
	var tps, cpuMS []float64
	for i := range trials + 1 {
		t := time.Now()
		c0, _, _ := cpuTime(cmd.Process.Pid)
		resp, err := client.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		var r struct {
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || r.Usage.CompletionTokens == 0 {
			return fmt.Errorf("/v1/completions: %d, %v", resp.StatusCode, err)
		}
		c1, _, _ := cpuTime(cmd.Process.Pid)
		if i > 0 {
			tps = append(tps, float64(r.Usage.CompletionTokens)/time.Since(t).Seconds())
			cpuMS = append(cpuMS, float64(c1-c0)/float64(time.Millisecond)/float64(r.Usage.CompletionTokens))
		}
	}
	b.add(Result{Section: modelSection, Unit: "tokens/s"}, "stories260K greedy via /v1/completions, "+name, tps, nil, "wall clock, one slot, HTTP included")
	b.add(Result{Section: modelSection, Unit: "CPU ms/token"}, "worker CPU time per token via /v1/completions, "+name, cpuMS, nil,
		"the worker's CPU time (all threads, /proc/PID/stat, 10 ms ticks) per generated token")

	settle := 2 * time.Second
	if b.o.Smoke {
		settle = 200 * time.Millisecond
	}
	time.Sleep(settle)
	rss, err := rssBytes(cmd.Process.Pid)
	if err != nil {
		return err
	}
	anon, file := statusKB(cmd.Process.Pid, "RssAnon"), statusKB(cmd.Process.Pid, "RssFile")
	b.add(Result{Section: modelSection, Unit: "MiB"}, "worker RSS idle, model loaded (VmRSS), "+name, []float64{float64(rss) / mib}, nil,
		fmt.Sprintf("after %d generations and a %s settle: RssAnon %.1f MiB, RssFile %.1f MiB (binary and the mapped model, shared between workers)",
			trials+1, settle, float64(anon)/1024, float64(file)/1024))
	return nil
}

// statusKB reads a "Name: N kB" field of /proc/PID/status; 0 if absent.
func statusKB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
