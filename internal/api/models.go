package api

import (
	"net/http"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

func (s *Server) modelList(w http.ResponseWriter, r *http.Request) error {
	out := apiv1.ModelList{Models: []apiv1.ModelEntry{}}
	for _, e := range s.h.Catalog().List() {
		out.Models = append(out.Models, apiv1.ModelEntry{Ref: e.Ref, Path: e.Path, SizeBytes: e.SizeBytes, AddedAt: e.AddedAt})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) modelAdd(w http.ResponseWriter, r *http.Request) error {
	var req apiv1.ModelAddRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	e, err := s.h.AddModel(req.Ref, req.Path)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiv1.ModelEntry{Ref: e.Ref, Path: e.Path, SizeBytes: e.SizeBytes, AddedAt: e.AddedAt})
	return nil
}

func (s *Server) modelRemove(w http.ResponseWriter, r *http.Request) error {
	if err := s.h.RemoveModel(r.URL.Query().Get("ref")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Message{Message: "Model removed"})
	return nil
}
