package process

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartReaperKillingEscapes is StartReaper, and more: a live child handed
// to this process (it is a subreaper) that carries the environment entry
// markerKey=markerValue and is outside the process group of every child
// Start is tracking — so it left its worker's process group, and its
// worker can no longer signal it — is killed at once with SIGKILL (SPEC
// §14). It is checked on every round: on SIGCHLD (a parent's exit is what
// hands its children over) and at least every couple of seconds.
func StartReaperKillingEscapes(log *slog.Logger, markerKey, markerValue string) (*Reaper, error) {
	r, err := StartReaper(log)
	if err != nil {
		return nil, err
	}
	r.escMu.Lock()
	r.marker = [2]string{markerKey, markerValue}
	r.escMu.Unlock()
	// A round now, for what was handed over before the marker was set.
	select {
	case r.sigs <- syscall.SIGCHLD:
	default:
	}
	return r, nil
}

// killIfEscaped kills child pid when it is an escape (see
// StartReaperKillingEscapes). It reports whether it sent the signal.
func (r *Reaper) killIfEscaped(pid int) bool {
	r.escMu.Lock()
	m := r.marker
	r.escMu.Unlock()
	if m[0] == "" {
		return false
	}
	trackMu.Lock()
	if tracked[pid] > 0 || starting > 0 {
		trackMu.Unlock()
		return false
	}
	trackMu.Unlock()
	st, err := readStat(pid)
	if err != nil || st.Dead() || st.PPID != os.Getpid() {
		return false
	}
	trackMu.Lock()
	inWorkerGroup := tracked[st.PGRP] > 0
	trackMu.Unlock()
	if inWorkerGroup || !HasEnv(pid, m[0], m[1]) {
		return false
	}
	// Signal through a pidfd verified to name the process just read.
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	if again, err := readStat(pid); err != nil || again.StartTime != st.StartTime {
		return false
	}
	if err := unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0); err != nil {
		return false
	}
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	r.log.Warn("Killed a process that escaped its worker and was handed to the hive", "pid", pid,
		"pgid", st.PGRP, "cmdline", strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
	return true
}
