package daemon

import (
	"log/slog"
	"syscall"

	"golang.org/x/sys/unix"
)

// hardenSelf makes the hive non-dumpable (no other process of its user —
// a worker running as the same user — can read its memory or
// /proc/<pid>/environ, where RBEE_API_TOKEN may be) and sets
// no_new_privs on every thread, so every worker inherits it: no worker can
// gain privileges through a set-user-ID program (SPEC §14). Both are
// one-way; a failure is logged, not fatal.
func hardenSelf(log *slog.Logger) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("Cannot make the hive non-dumpable", "error", err)
	}
	// no_new_privs is a per-thread attribute inherited at clone: set it on
	// every thread, since any of them may fork a worker.
	if _, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); errno != 0 {
		log.Warn("Cannot set no_new_privs; workers may gain privileges through set-user-ID programs", "error", errno)
	}
}
