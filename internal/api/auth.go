package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/console"
	"github.com/rbee/rbee-hive/internal/supervisor"
	"github.com/rbee/rbee-hive/internal/validate"
)

// operator requires the operator token unless the hive runs in dev mode.
func (s *Server) operator(h handlerFunc) http.HandlerFunc {
	return s.run(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.checkOperator(r); err != nil {
			return err
		}
		return h(w, r)
	})
}

func (s *Server) checkOperator(r *http.Request) error {
	if s.o.Token == "" {
		return nil
	}
	tok, err := bearer(r)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.Token)) != 1 {
		s.rejects.warn(s.log, "Rejected operator token", "fingerprint", Fingerprint(tok), "remote", r.RemoteAddr)
		return unauthorized(apiv1.CodeInvalidAPIKey, "invalid API token")
	}
	markAuthenticated(r)
	return nil
}

// checkBrowser refuses (403 FORBIDDEN) what a web browser sends on behalf
// of a page of another site: the guard the queen shares, console.CrossSite;
// dev mode is no operator token.
func (s *Server) checkBrowser(r *http.Request) error {
	if why := console.CrossSite(r, s.o.Token == "", "hive"); why != "" {
		return errorf(http.StatusForbidden, apiv1.CodeForbidden, "%s", why)
	}
	return nil
}

// worker marks routes that workers call; the per-worker token is checked
// by the handler, against the worker id in the body.
func (s *Server) worker(h handlerFunc) http.HandlerFunc { return s.run(h) }

func (s *Server) metricsAuth(h handlerFunc) http.HandlerFunc {
	return s.run(func(w http.ResponseWriter, r *http.Request) error {
		if !s.o.MetricsPublic && !(s.o.MetricsLoopback && console.LoopbackHost(r.Host)) {
			if err := s.checkOperator(r); err != nil {
				return err
			}
		}
		return h(w, r)
	})
}

func unauthorized(code, msg string) *Error {
	e := errorf(http.StatusUnauthorized, code, "%s", msg)
	e.Header = http.Header{"Www-Authenticate": {`Bearer realm="rbee-hive"`}}
	return e
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
// The prefix is case-sensitive; the token is trimmed; empty, over-long or
// control-character tokens are refused.
func bearer(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", unauthorized(apiv1.CodeMissingAPIKey, "missing Authorization: Bearer <token> header")
	}
	if len(vals) > 1 {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, "more than one Authorization header")
	}
	h := vals[0]
	if len(h) > MaxAuthHeaderBytes {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, "Authorization header too long")
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, `Authorization must be "Bearer <token>" (case-sensitive)`)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", unauthorized(apiv1.CodeInvalidAPIKey, "empty bearer token")
	}
	for _, c := range tok {
		if c < 0x21 || c == 0x7f {
			return "", unauthorized(apiv1.CodeInvalidAPIKey, "bearer token contains control characters or spaces")
		}
	}
	return tok, nil
}

// Fingerprint returns a short, non-reversible name for a token for logs.
func Fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:3])
}

// workerAuth checks the calling worker's own token for id and returns the
// worker.
func (s *Server) workerAuth(r *http.Request, id string) (*supervisor.Worker, error) {
	if e := validate.WorkerID(id); e != nil {
		return nil, errorf(http.StatusBadRequest, e.Code, "%s", e.Message)
	}
	wk, err := s.h.Worker(id)
	if err != nil {
		return nil, err
	}
	tok, err := bearer(r)
	if err != nil {
		return nil, err
	}
	if !wk.Authorize(tok) {
		s.rejects.warn(s.log, "Rejected worker token", "worker_id", id, "fingerprint", Fingerprint(tok), "remote", r.RemoteAddr)
		return nil, unauthorized(apiv1.CodeInvalidAPIKey, "token is not this worker's token")
	}
	markAuthenticated(r)
	return wk, nil
}
