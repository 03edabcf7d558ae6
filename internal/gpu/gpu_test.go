package gpu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	uuidA100 = "GPU-6b2c4a2e-7a3a-3c5b-9e1e-0c9d4a1f2b3c"
	uuid4090 = "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
)

var fixtureGPUs = []GPU{
	{Index: 0, UUID: uuidA100, Name: "NVIDIA A100-SXM4-40GB", MemoryTotal: 40960 << 20, MemoryUsed: 1024 << 20, Utilization: 35},
	{Index: 1, UUID: uuid4090, Name: "NVIDIA GeForce RTX 4090", MemoryTotal: 24564 << 20, MemoryUsed: 20012 << 20, Utilization: 97},
}

var fixtureProcs = []Process{
	{PID: 4242, UUID: uuidA100, MemoryUsed: 1000 << 20},
	{PID: 4243, UUID: uuidA100, MemoryUsed: 24 << 20},
	{PID: 5150, UUID: uuid4090, MemoryUsed: 19988 << 20},
}

func TestParseGPUsFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/query-gpu.csv")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseGPUs(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, fixtureGPUs) {
		t.Fatalf("got %+v\nwant %+v", got, fixtureGPUs)
	}
	if f := got[1].Free(); f != 4552<<20 {
		t.Fatalf("free of the 4090 = %d, want 4552 MiB", f)
	}
}

func TestParseGPUsNotSupportedValuesAndCommaInName(t *testing.T) {
	out := "1, GPU-b, Tesla T4, rev, 2, 15360, [N/A], [Not Supported]\n0, GPU-a, NVIDIA H100 80GB HBM3, 81559, 0, 0\n"
	got, err := ParseGPUs([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []GPU{
		{Index: 0, UUID: "GPU-a", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 81559 << 20, Utilization: 0},
		{Index: 1, UUID: "GPU-b", Name: "Tesla T4, rev, 2", MemoryTotal: 15360 << 20, MemoryUsed: 0, Utilization: -1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"0, GPU-a, x", "x, GPU-a, n, 1, 1, 1", "0, , n, 1, 1, 1"} {
		if _, err := ParseGPUs([]byte(bad)); err == nil {
			t.Errorf("ParseGPUs(%q) accepted", bad)
		}
	}
}

func TestParseProcessesFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/query-compute-apps.csv")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := ParseProcesses(append(data, "No running processes found\n"...))
	if !reflect.DeepEqual(got, fixtureProcs) {
		t.Fatalf("got %+v\nwant %+v", got, fixtureProcs)
	}
}

// fakeSMIDir copies the fake nvidia-smi and its fixtures into a fresh folder
// and puts it first on PATH.
func fakeSMIDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"nvidia-smi", "query-gpu.csv", "query-compute-apps.csv"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_NVIDIA_SMI_DIR", dir)
	return dir
}

func TestAutoUsesNvidiaSMIOnPath(t *testing.T) {
	dir := fakeSMIDir(t)
	src, err := Open("auto")
	if err != nil {
		t.Fatal(err)
	}
	smi, ok := src.(*NvidiaSMI)
	if !ok || smi.Path != filepath.Join(dir, "nvidia-smi") {
		t.Fatalf("auto with nvidia-smi on PATH gave %#v", src)
	}
	gpus, procs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gpus, fixtureGPUs) || !reflect.DeepEqual(procs, fixtureProcs) {
		t.Fatalf("got %+v %+v", gpus, procs)
	}
}

func TestAutoWithoutNvidiaSMIIsQuietlyNone(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	src, err := Open("auto")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := src.(None); !ok {
		t.Fatalf("got %#v", src)
	}
	if g, p, err := src.List(context.Background()); g != nil || p != nil || err != nil {
		t.Fatal(g, p, err)
	}
	if _, err := Open("relative.json"); err == nil {
		t.Fatal("a relative inventory path was accepted")
	}
}

// A driver that stops answering keeps the last reading (and says why)
// rather than making the GPUs vanish under running workers.
func TestRefresherKeepsLastReadingWhenNvidiaSMIFails(t *testing.T) {
	dir := fakeSMIDir(t)
	src, _ := Open("auto")
	r := NewRefresher(src, time.Hour, nil)
	s := r.Refresh(context.Background())
	if s.Err != nil || len(s.GPUs) != 2 {
		t.Fatalf("first read: %+v", s)
	}
	if err := os.WriteFile(filepath.Join(dir, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s = r.Refresh(context.Background())
	if s.Err == nil || !strings.Contains(s.Err.Error(), "couldn't communicate with the NVIDIA driver") || len(s.GPUs) != 2 {
		t.Fatalf("failed read: err %v, %d gpus", s.Err, len(s.GPUs))
	}
	if r.Snapshot() != s {
		t.Fatal("Snapshot is not the latest reading")
	}
}

func writeInventory(t *testing.T, path string, inv FileInventory) {
	t.Helper()
	b := []byte(`{"gpus":[`)
	for i, g := range inv.GPUs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, []byte(strings.NewReplacer("I", itoa(g.Index), "U", g.UUID, "T", itoa64(g.MemoryTotal), "M", itoa64(g.MemoryUsed)).
			Replace(`{"index":I,"uuid":"U","name":"Fake GPU","memory_total_bytes":T,"memory_used_bytes":M,"utilization_percent":0}`))...)
	}
	b = append(b, "]}"...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string     { return strconv.Itoa(n) }
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

func TestFileInventoryReReadOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpus.json")
	writeInventory(t, path, FileInventory{GPUs: []GPU{{Index: 0, UUID: "GPU-x", MemoryTotal: 8 << 30, MemoryUsed: 1 << 30}}})
	src, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRefresher(src, time.Hour, nil)
	if s := r.Refresh(context.Background()); len(s.GPUs) != 1 || s.GPUs[0].Free() != 7<<30 || s.Source != "file:"+path || !s.Static {
		t.Fatalf("first read: %+v", s)
	}
	writeInventory(t, path, FileInventory{GPUs: []GPU{
		{Index: 1, UUID: "GPU-y", MemoryTotal: 16 << 30, MemoryUsed: 0},
		{Index: 0, UUID: "GPU-x", MemoryTotal: 8 << 30, MemoryUsed: 6 << 30},
	}})
	s := r.Refresh(context.Background())
	if len(s.GPUs) != 2 || s.GPUs[0].Index != 0 || s.GPUs[0].Free() != 2<<30 || s.GPUs[1].UUID != "GPU-y" {
		t.Fatalf("after the change: %+v", s.GPUs)
	}
	// A broken file keeps the last good reading, with the error.
	if err := os.WriteFile(path, []byte(`{"gpus":[{"index":0,"uuid":"GPU-x","bogus":1}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s = r.Refresh(context.Background())
	if s.Err == nil || !strings.Contains(s.Err.Error(), "bogus") || len(s.GPUs) != 2 {
		t.Fatalf("broken file: %v %+v", s.Err, s.GPUs)
	}
}

func TestParseFileRejectsInconsistentDevices(t *testing.T) {
	for _, bad := range []string{
		`{"gpus":[{"index":0,"uuid":"a"},{"index":0,"uuid":"b"}]}`,
		`{"gpus":[{"index":0,"uuid":"a"},{"index":1,"uuid":"a"}]}`,
		`{"gpus":[{"index":0,"uuid":"a","memory_total_bytes":1,"memory_used_bytes":2}]}`,
		`{"gpus":[{"index":0,"uuid":""}]}`,
	} {
		if _, err := ParseFile([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestRefresherBackgroundReadsAndKick(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpus.json")
	writeInventory(t, path, FileInventory{GPUs: []GPU{{Index: 0, UUID: "GPU-x", MemoryTotal: 8 << 30}}})
	r := NewRefresher(NewFile(path), time.Hour, nil)
	r.Start(context.Background())
	defer r.Close()
	first := r.Snapshot()
	writeInventory(t, path, FileInventory{GPUs: []GPU{{Index: 0, UUID: "GPU-x", MemoryTotal: 8 << 30, MemoryUsed: 3 << 30}}})
	r.Kick()
	deadline := time.Now().Add(5 * time.Second)
	for r.Snapshot() == first || r.Snapshot().GPUs[0].MemoryUsed != 3<<30 {
		if time.Now().After(deadline) {
			t.Fatal("a kick did not refresh the snapshot")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func accounts() []DeviceAccount {
	s := &Snapshot{GPUs: []GPU{
		{Index: 0, UUID: "GPU-0", MemoryTotal: 24 << 30, MemoryUsed: 20 << 30}, // 4 GiB free
		{Index: 1, UUID: "GPU-1", MemoryTotal: 24 << 30, MemoryUsed: 14 << 30}, // 10 GiB free
	}}
	return Account(s, 512<<20, []Reservation{{WorkerID: "w1", UUID: "GPU-1", Bytes: 2 << 30}, {WorkerID: "w9", UUID: "GPU-9", Bytes: 1}})
}

func TestAccountBooksReservationsPerDevice(t *testing.T) {
	a := accounts()
	if a[0].Available != 4<<30-512<<20 || a[0].Reserved != 0 {
		t.Fatalf("GPU 0: %+v", a[0])
	}
	if a[1].Available != 10<<30-512<<20-2<<30 || a[1].Reserved != 2<<30 || !reflect.DeepEqual(a[1].Workers, []string{"w1"}) {
		t.Fatalf("GPU 1: %+v", a[1])
	}
}

func TestPickAutoTakesTheFreerDevice(t *testing.T) {
	got, err := Pick(accounts(), -1, 3<<30, "test")
	if err != nil || got.Index != 1 {
		t.Fatalf("auto picked %d, %v; want GPU 1", got.Index, err)
	}
	got, err = Pick(accounts(), 0, 3<<30, "test")
	if err != nil || got.Index != 0 {
		t.Fatalf("asked 0: %d, %v", got.Index, err)
	}
}

func TestPickNothingFitsNamesTheNumbers(t *testing.T) {
	_, err := Pick(accounts(), -1, 8<<30, "test")
	var ie *InsufficientVRAMError
	if !errors.As(err, &ie) || !errors.Is(err, ErrInsufficientVRAM) {
		t.Fatalf("got %v", err)
	}
	want := InsufficientVRAMError{Device: 1, UUID: "GPU-1", Free: 10 << 30, Reserve: 512 << 20, Reserved: 2 << 30, Need: 8 << 30, Auto: true}
	if *ie != want {
		t.Fatalf("got %+v, want %+v", *ie, want)
	}
	for _, s := range []string{"8192.0 MiB", "10240.0 MiB", "512.0 MiB", "2048.0 MiB", "GPU 1"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	if d := ie.Deficit(); d != 8<<30-(10<<30-512<<20-2<<30) {
		t.Fatalf("deficit %d", d)
	}
	if _, err := Pick(accounts(), 0, 4<<30, "test"); !errors.As(err, &ie) || ie.Device != 0 || ie.Auto {
		t.Fatalf("asked GPU 0: %v", err)
	}
}

func TestPickMissingDevice(t *testing.T) {
	_, err := Pick(accounts(), 2, 1, "test")
	var de *InvalidDeviceError
	if !errors.As(err, &de) || !errors.Is(err, ErrNoSuchDevice) || !strings.Contains(err.Error(), "GPUs 0, 1") {
		t.Fatalf("got %v", err)
	}
	_, err = Pick(nil, -1, 1, "none")
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "no GPUs") {
		t.Fatalf("no GPUs: %v", err)
	}
}

// A fake /proc: 100 is a worker (group leader), 101 its child in its group,
// 102 a grandchild that moved to its own group, 200 someone else's.
func TestTreeOwnerAndAttribute(t *testing.T) {
	root := t.TempDir()
	stat := map[int]string{ // whole lines: procstat reads up to field 22
		100: "100 (llm-worker) S 1 100 100 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5000",
		101: "101 (python3 (x)) S 100 100 100 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5000",
		102: "102 (cuda helper) S 101 102 102 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5000",
		200: "200 (other) S 1 200 200 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5000",
	}
	for pid, s := range stat {
		d := filepath.Join(root, itoa(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "stat"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	owner := TreeOwner(root, map[int]string{100: "worker-a"})
	got := Attribute([]Process{
		{PID: 100, MemoryUsed: 1}, {PID: 101, MemoryUsed: 10}, {PID: 102, MemoryUsed: 100},
		{PID: 200, MemoryUsed: 1000}, {PID: 999, MemoryUsed: 10000},
	}, owner)
	if !reflect.DeepEqual(got, map[string]int64{"worker-a": 111}) {
		t.Fatalf("got %v", got)
	}
}

// The fuzzer found it: a memory figure too large for int64 bytes (1e300
// MiB) converted to a negative total, and NaN to anything.
func TestParseGPUsMemoryTooLargeOrNaNIsZeroNotNegative(t *testing.T) {
	gs, err := ParseGPUs([]byte("0, GPU-a, x, 1e300, NaN, 5\n1, GPU-b, y, 9007199254740992, +Inf, 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.MemoryTotal != 0 || g.MemoryUsed != 0 {
			t.Errorf("GPU %d: total %d used %d, want 0 and 0", g.Index, g.MemoryTotal, g.MemoryUsed)
		}
	}
}
