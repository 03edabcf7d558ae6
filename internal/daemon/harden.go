package daemon

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// hardenSelf makes the hive non-dumpable: no other process of its user (a
// worker running as the same user) can read its memory or
// /proc/<pid>/environ, where RBEE_API_TOKEN may be (SPEC §14). It is
// one-way; a failure is logged, not fatal. (Workers get no_new_privs at
// their start: internal/process.)
func hardenSelf(log *slog.Logger) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("Cannot make the hive non-dumpable", "error", err)
	}
}
