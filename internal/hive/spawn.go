package hive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/cgroup"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/models"
	"github.com/rbee/rbee-hive/internal/record"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
)

// Spawn validates req, resolves the model, checks limits and memory, and
// starts a worker. It blocks for the start grace. On a start-grace failure
// the worker stays listed as failed/spawn_failed and the error is of kind
// SpawnFailed (wrapping a *supervisor.SpawnError). Errors are *Error.
func (h *Hive) Spawn(ctx context.Context, req *apiv1.SpawnRequest) (*supervisor.Worker, error) {
	w, err := h.spawn(ctx, req)
	return w, wrapErr(err)
}

func (h *Hive) spawn(ctx context.Context, req *apiv1.SpawnRequest) (*supervisor.Worker, error) {
	if req.Backend == "" {
		req.Backend = "cpu"
	}
	if req.ModelRef == "" {
		return nil, &validate.Error{Code: apiv1.CodeInvalidModelRef, Message: "model_ref is required"}
	}
	if _, _, err := models.ParseRef(req.ModelRef); err != nil {
		return nil, err
	}
	if e := validate.Backend(req.Backend); e != nil {
		return nil, e
	}
	if req.Device != apiv1.DeviceAuto {
		if e := validate.Device(req.Device); e != nil {
			return nil, e
		}
	}
	if e := validate.Labels(req.Labels); e != nil {
		return nil, e
	}
	// The profile decides the base settings (its stop_timeout), so find it
	// first: the request's profile, else the settings' profile, else the
	// default.
	probe, err := config.Override(h.cfg.Defaults, req.Settings)
	if err != nil {
		return nil, &validate.Error{Code: "INVALID_SETTINGS", Message: err.Error()}
	}
	name := probe.Profile
	if req.Profile != "" {
		name = req.Profile
	}
	prof, ok := h.cfg.Profiles[name]
	if !ok {
		return nil, &validate.Error{Code: "INVALID_PROFILE", Message: fmt.Sprintf("no profile named %q", clip(name))}
	}
	if e := validate.Env(req.Env, prof.AllowEnv); e != nil {
		return nil, e
	}
	base := h.cfg.Defaults
	if prof.StopTimeout > 0 {
		base.StopTimeout = prof.StopTimeout
	}
	settings, err := config.Override(base, req.Settings)
	if err != nil {
		return nil, &validate.Error{Code: "INVALID_SETTINGS", Message: err.Error()}
	}
	settings.Profile = name
	lim, err := config.ApplyCeilings(h.cfg.Defaults.Limits, settings.Limits, h.cfg.LimitsMax)
	if err != nil {
		return nil, &validate.Error{Code: "LIMITS_NOT_ALLOWED", Message: err.Error()}
	}
	settings.Limits = lim

	path, size, err := h.resolver.Resolve(req.ModelRef, req.ModelPath)
	if err != nil {
		return nil, err
	}
	if settings.Limits.NeedsCgroup() {
		if h.cgroups == nil {
			return nil, &cgroup.UnsupportedError{Problems: []string{"cgroups are not available to this hive"}}
		}
		if err := h.cgroups.Supports(settings.Limits); err != nil {
			return nil, err
		}
	}
	onGPU := wantsGPU(req.Backend, prof)
	est, ramBasis := estimate(&h.gpu.estimates, path, size, prof, settings, onGPU)
	id, spared := h.workerID()
	defer h.spawned(id, spared)
	device, gpuUUID := req.Device, ""
	if onGPU {
		dev, release, err := h.placeGPU(ctx, id, req, est.VRAMBytes)
		if err != nil {
			return nil, err
		}
		defer release() // the registered worker's own state holds the reservation from then on
		device, gpuUUID = dev.Index, dev.UUID
	} else if device == apiv1.DeviceAuto {
		device = 0
	}
	if err := h.preflightRAM(est, ramBasis); err != nil {
		return nil, err
	}
	cmd, err := resolveCommand(prof.Command)
	if err != nil {
		return nil, &supervisor.SpawnError{Err: err}
	}

	// Admission (SPEC §14, §3): decided under the lock Shutdown takes its
	// snapshot under, so a spawn is either refused or registered before
	// that snapshot (Shutdown waits for admitted spawns to register).
	if err := h.admit(); err != nil {
		return nil, err
	}
	registered := false
	defer func() {
		if !registered {
			h.mu.Lock()
			h.pending--
			h.mu.Unlock()
			h.admitting.Done()
		}
	}()
	port, err := h.ports.Acquire(id)
	if err != nil {
		return nil, err
	}
	wu := h.users[name]
	env := BuildEnv(BaseEnv(wu.Home, os.Getenv), prof.Env, req.Env)
	if gpuUUID != "" {
		env = withGPUEnv(env, gpuUUID)
	}
	spec := record.Spec{
		ID: id, ModelRef: req.ModelRef, ModelPath: path, ModelSize: size, Backend: req.Backend,
		Device: device, ProfileName: name, Profile: prof, Settings: settings, Argv: cmd,
		Env: env, Labels: req.Labels, HiveURL: h.hiveURL, Marker: h.marker, Credential: wu.Credential,
		GPUUUID: gpuUUID, Estimate: &est,
	}
	if spared {
		h.useSpareLog(id)
	}
	w, err := supervisor.Start(h.deps(), spec, port, func(w *supervisor.Worker) {
		registered = true
		h.mu.Lock()
		h.workers[w.ID()] = w
		h.pending--
		h.mu.Unlock()
		h.admitting.Done()
	})
	if err != nil && w == nil {
		h.ports.Release(port, id)
	}
	return w, err
}

// admit decides, under h.mu, whether a spawn may go ahead: not while the
// hive shuts down, not beyond max_workers live workers. An admitted spawn
// must end with exactly one admitting.Done (and pending--).
func (h *Hive) admit() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shuttingDown {
		return ErrShuttingDown
	}
	live := h.pending
	for _, w := range h.workers {
		if info := w.Info(); info != nil && !info.State.Ended() {
			live++
		}
	}
	if max := h.cfg.MaxWorkers; max > 0 && live >= max {
		return fmt.Errorf("%w: %d live workers; max_workers is %d", ErrTooManyWorkers, live, max)
	}
	h.pending++
	h.admitting.Add(1)
	return nil
}

// resolveCommand makes argv[0] absolute: a bare name is looked up beside the
// rbee-hive binary, then on PATH.
func resolveCommand(cmd []string) ([]string, error) {
	if len(cmd) == 0 {
		return nil, errors.New("profile has no command")
	}
	out := append([]string(nil), cmd...)
	name := out[0]
	switch {
	case filepath.IsAbs(name):
	case strings.Contains(name, "/"):
		abs, err := filepath.Abs(name)
		if err != nil {
			return nil, err
		}
		out[0] = abs
	default:
		if exe, err := os.Executable(); err == nil {
			beside := filepath.Join(filepath.Dir(exe), name)
			if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				out[0] = beside
				return out, nil
			}
		}
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("worker command %q: not found beside rbee-hive or on PATH", name)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		out[0] = abs
	}
	return out, nil
}
