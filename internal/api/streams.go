package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/wallgrid"
)

// acquireStream counts a long-lived stream against the client's bound.
func (s *Server) acquireStream(r *http.Request) (func(), error) {
	host := streamClient(r)
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.streams[host] >= MaxStreamsPerClient {
		return nil, errorf(http.StatusTooManyRequests, apiv1.CodeTooManyStreams,
			"at most %d open streams per client", MaxStreamsPerClient)
	}
	s.streams[host]++
	return func() {
		s.streamsMu.Lock()
		defer s.streamsMu.Unlock()
		if s.streams[host]--; s.streams[host] <= 0 {
			delete(s.streams, host)
		}
	}, nil
}

func (s *Server) eventsStream(w http.ResponseWriter, r *http.Request) error {
	release, err := s.acquireStream(r)
	if err != nil {
		return err
	}
	defer release()
	sub := s.h.Events().Subscribe(1024)
	defer sub.Close()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, ": rbee-hive events\n\n")
	_ = rc.Flush()
	keep := time.NewTimer(wallgrid.Until(sseKeepAliveInterval))
	defer keep.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-keep.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			_ = rc.Flush()
			keep.Reset(wallgrid.Until(sseKeepAliveInterval))
		case ev, ok := <-sub.C:
			// Every event already queued goes out in the same write: a
			// front-door request flips its worker busy and idle again
			// within a millisecond, and a write per event was a sixth of
			// the hive's CPU per request with one stream open.
			for {
				if !ok {
					_, _ = io.WriteString(w, "event: lagged\ndata: {}\n\n")
					return nil
				}
				buf = append(buf[:0], "event: state\ndata: "...)
				b, _ := json.Marshal(ev)
				buf = append(append(buf, b...), "\n\n"...)
				if _, err := w.Write(buf); err != nil {
					return nil
				}
				select {
				case ev, ok = <-sub.C:
					continue
				default:
				}
				break
			}
			_ = rc.Flush()
		}
	}
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) error {
	ref, err := s.lookup(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	n := defaultLogTail
	if v := q.Get("tail"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 || n > maxLogTail {
			return errorf(http.StatusBadRequest, "INVALID_TAIL", "tail must be 0..%d", maxLogTail)
		}
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		follow, err = strconv.ParseBool(v)
		if err != nil {
			return errorf(http.StatusBadRequest, "INVALID_FOLLOW", "follow must be true or false")
		}
	}
	lg := ref.w.Log()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !follow {
		lines, err := tailFile(lg.Path(), n)
		if err != nil {
			return err
		}
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
		}
		return nil
	}
	release, err := s.acquireStream(r)
	if err != nil {
		return err
	}
	defer release()
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	// The follow ends when the worker's log closes, which its owner does
	// before the worker counts as ended, once every line the worker wrote
	// has been read: the follow sends them all, then ends. Cutting it off
	// when the worker ended lost the lines still on their way (a worker's
	// last words, usually the ones that say why it ended). The worker's
	// end stops it only as a fallback, should its log stay open.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-ref.w.Done():
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(logFollowDrain)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		cancel()
	}()
	send := func(line string) error {
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return err
		}
		return rc.Flush()
	}
	if n == 0 {
		// tail=0: no history, as without follow (TailFollow reads 0 as
		// every line it holds).
		_ = lg.Follow(ctx, send)
	} else {
		_ = lg.TailFollow(ctx, n, send)
	}
	return nil
}

// logFollowDrain is how long a log follow may go on sending lines after
// its worker has ended, should the worker's log not close.
const logFollowDrain = 30 * time.Second
