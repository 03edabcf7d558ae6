package api

import (
	"net/http"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/models"
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
	ref := r.URL.Query().Get("ref")
	if _, _, err := models.ParseRef(ref); err != nil {
		return err
	}
	if err := s.h.Catalog().Remove(ref); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.Message{Message: "Model removed"})
	return nil
}
