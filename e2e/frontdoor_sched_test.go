package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/builtinmodel"
	"github.com/rbee/rbee-hive/internal/frontdoor"
	"github.com/rbee/rbee-hive/internal/testutil/hivetest"
)

// handStartedEstimate is what the front door counts a hand-started worker
// of the built-in model for (its estimate at ctx 0).
func handStartedEstimate(t *testing.T) int64 {
	t.Helper()
	p := filepath.Join(t.TempDir(), builtinmodel.FileName)
	if err := os.WriteFile(p, builtinmodel.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	est, err := frontdoor.EstimateFromFile(p, 0)
	if err != nil || est <= 100 {
		t.Fatalf("estimate %d, %v", est, err)
	}
	return est
}

// A cold start that waits because a worker started by hand (no model
// label) holds the memory it needs starts the moment that worker ends, not
// at the queue timeout: the end of a worker the front door does not serve
// through frees memory too.
func TestColdStartWaitingOnAHandStartedWorkerStartsWhenItEnds(t *testing.T) {
	est := handStartedEstimate(t)
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) + fmt.Sprintf(`models:
  m: {model_ref: file:stories260K.gguf, profile: gen, memory_bytes: 100}
memory_budget_bytes: %d
queue: {timeout: 8s}
`, est+50)})
	hand := h.MustSpawn(apiv1.SpawnRequest{ModelRef: h.Ref, Profile: "gen"})
	h.WaitState(hand.WorkerID, wait, "idle")
	code := make(chan int, 1)
	go func() { c, _, _ := h.chat("m"); code <- c }()
	hivetest.Eventually(t, wait, func() bool { return h.models().Data[0].Rbee.Queued == 1 })
	select {
	case c := <-code:
		t.Fatalf("m answered %d while the hand-started worker held the memory", c)
	case <-time.After(300 * time.Millisecond):
	}
	if ws := h.workersOf("m", true); len(ws) != 0 {
		t.Fatalf("m started over the budget: %s", dump(ws))
	}
	start := time.Now()
	if _, err := h.Client.Stop(context.Background(), hand.WorkerID); err != nil {
		t.Fatal(err)
	}
	h.WaitState(hand.WorkerID, wait, "terminated")
	if c := <-code; c != 200 {
		t.Fatalf("m: %d %s after the hand-started worker ended\n%s", c, time.Since(start), h.Log())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("m answered %s after the hand-started worker ended", took)
	}
}

// A worker an operator adds to a model's pool by its alias (label
// rbee.model: the alias) is one of the model's workers: it serves the
// model's requests and holds its memory, so no second worker is started
// beside it over the memory budget.
func TestWorkerLabelledWithAnAliasJoinsItsModelsPool(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) + `models:
  m: {model_ref: file:stories260K.gguf, profile: gen, memory_bytes: 100, max_workers: 2, aliases: [tiny]}
memory_budget_bytes: 150
`})
	hand := h.MustSpawn(apiv1.SpawnRequest{ModelRef: h.Ref, Profile: "gen", Labels: map[string]string{"rbee.model": "tiny"}})
	h.WaitState(hand.WorkerID, wait, "idle")
	if code, b, _ := h.chat("m"); code != 200 {
		t.Fatalf("m: %d %s", code, b)
	}
	ws, err := h.Client.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].ID != hand.WorkerID {
		t.Fatalf("want only the alias-labelled worker %s live (budget 150, 100 each): %s", hand.WorkerID, dump(ws))
	}
	if l := h.models(); l.Data[0].Rbee.Workers["idle"] != 1 {
		t.Fatalf("models %s", dump(l))
	}
}

// A min_workers model whose workers keep failing while they load is left
// alone after three of them failed: the front door does not respawn it
// for ever (each failed worker used to count as a success because its
// spawn call had returned).
func TestMinWorkersOfABrokenModelAreNotRespawnedForEver(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" +
		genericProfile(t, "gen", map[string]string{"GENERIC_LOAD_MS": "5000", "GENERIC_EXIT_AFTER_MS": "300"}) + `models:
  m: {model_ref: file:stories260K.gguf, profile: gen, min_workers: 1, restart: {policy: never}}
`})
	failed := func() int {
		n := 0
		for _, w := range h.workersOf("m", true) {
			if w.State == "failed" {
				n++
			}
		}
		return n
	}
	if !hivetest.Eventually(t, wait, func() bool { return failed() >= 3 }) {
		t.Fatalf("workers %s", dump(h.workersOf("m", true)))
	}
	// Three failed starts in a row: no more (a fourth would have failed
	// within about 0.4 s).
	time.Sleep(2 * time.Second)
	if ws := h.workersOf("m", true); len(ws) != 3 {
		t.Fatalf("%d workers of the broken model, want 3: %s", len(ws), dump(ws))
	}
}

// A reference worker busy with a request sent to its own port (the hive
// knows from its heartbeats: state busy) is not evicted for another
// model's cold start: that waits until the worker is idle again.
func TestWorkerBusyByItsHeartbeatsIsNotEvicted(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: `models:
  a: {model_ref: file:stories260K.gguf, ctx: 128, memory_bytes: 100}
  b: {model_ref: file:stories260K.gguf, ctx: 128, memory_bytes: 100}
memory_budget_bytes: 150
`})
	if code, b, _ := h.chat("a"); code != 200 {
		t.Fatalf("a: %d %s", code, b)
	}
	a := h.workersOf("a", false)[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", a.URL+"/v1/inference",
		strings.NewReader(`{"prompt":"Once upon a time","max_tokens":100,"token_delay_ms":100}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	h.WaitState(a.ID, wait, "busy")
	bCode := make(chan int, 1)
	go func() { code, _, _ := h.chat("b"); bCode <- code }()
	hivetest.Eventually(t, wait, func() bool { return h.models().Data[1].Rbee.Queued == 1 })
	select {
	case c := <-bCode:
		t.Fatalf("b answered %d while a was busy", c)
	case <-time.After(time.Second):
	}
	if info := h.Get(a.ID); info.State != "busy" {
		t.Fatalf("a, busy with a request to its own port, is %s/%s", info.State, info.Reason)
	}
	cancel()
	if c := <-bCode; c != 200 {
		t.Fatalf("b: %d", c)
	}
	if end := h.WaitState(a.ID, wait, "terminated"); end.Reason != "evicted" {
		t.Fatalf("a ended %s/%s", end.State, end.Reason)
	}
}

// A min_workers spawn the hive refuses outright (here: the model file is
// not there yet when the hive starts) is tried again, up to three times in
// a row: the model gets its worker once the file is there. It was tried
// once and never again.
func TestMinWorkersSpawnRefusedAtStartIsTriedAgain(t *testing.T) {
	h := startFD(t, hivetest.Options{Config: "profiles:\n" + genericProfile(t, "gen", nil) + `models:
  m: {model_ref: file:late.gguf, profile: gen, min_workers: 1}
`})
	hivetest.Eventually(t, 5*time.Second, func() bool { return strings.Contains(h.Log(), "Cold start failed") })
	if err := os.WriteFile(filepath.Join(h.Models, "late.gguf"), builtinmodel.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if !hivetest.Eventually(t, wait, func() bool {
		ws := h.workersOf("m", false)
		return len(ws) == 1 && ws[0].State == "idle"
	}) {
		t.Fatalf("no min_workers worker once the model file was there: %s\n%s", dump(h.workersOf("m", true)), h.Log())
	}
}
