// Package wallgrid puts a daemon's periodic work on one wall-clock grid.
//
// An idle Go process spends most of its CPU waking up, not on the work it
// wakes up for: each wake-up costs thread hand-offs and sysmon's spinning,
// several hundred microseconds of CPU on a small VM. So every periodic job
// of an idle hive — the health probes of all workers, the reaper's
// backstop round, pruning, GPU reads, the event stream's keep-alive —
// fires at multiples of its period counted from the same origin (the zero
// time), and jobs whose periods divide each other wake the process once
// between them.
package wallgrid

import "time"

// Next returns the first multiple of every that is strictly after t. every
// must be positive.
func Next(t time.Time, every time.Duration) time.Time {
	return t.Truncate(every).Add(every)
}

// Until returns the time from now to Next(now, every): a timer's duration.
func Until(every time.Duration) time.Duration {
	now := time.Now()
	return Next(now, every).Sub(now)
}

// Ceil returns t rounded up to a multiple of every (t itself when it is
// one). every must be positive.
func Ceil(t time.Time, every time.Duration) time.Time {
	if r := t.Truncate(every); r.Before(t) {
		return r.Add(every)
	}
	return t
}
