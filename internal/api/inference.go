package api

import (
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// inference wraps the front door's routes (SPEC §10): the operator token or
// an inference token is required unless neither is configured (dev mode on
// loopback), and errors carry the OpenAI-style "type". Nothing is written
// when the error is the client's own going away.
func (s *Server) inference(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := s.checkInference(r)
		if err == nil {
			err = h(w, r)
		}
		if err == nil {
			return
		}
		if ce := r.Context().Err(); ce != nil && errors.Is(err, ce) {
			return // the client went away: nobody to answer
		}
		writeErrorAs(w, s.log, err, true)
	}
}

func (s *Server) checkInference(r *http.Request) error {
	if s.o.Token == "" && len(s.o.InferenceTokens) == 0 {
		return nil
	}
	tok, err := bearer(r)
	if err != nil {
		return err
	}
	ok := s.o.Token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.Token)) == 1
	for _, t := range s.o.InferenceTokens {
		// Every token is compared, so the time taken does not say which
		// one matched.
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
			ok = true
		}
	}
	if !ok {
		s.rejects.warn(s.log, "Rejected inference token", "fingerprint", Fingerprint(tok), "remote", r.RemoteAddr)
		return unauthorized(apiv1.CodeInvalidAPIKey, "invalid API token")
	}
	markAuthenticated(r)
	return nil
}

func (s *Server) openaiModels(w http.ResponseWriter, r *http.Request) error {
	out := apiv1.OpenAIModelList{Object: "list", Data: []apiv1.OpenAIModel{}}
	if s.o.FrontDoor != nil {
		out = s.o.FrontDoor.Models()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) error {
	if s.o.FrontDoor == nil {
		return errorf(http.StatusNotFound, apiv1.CodeModelNotFound, "this hive serves no models")
	}
	return s.o.FrontDoor.ServeInference(w, r)
}
