package hive

import (
	"path/filepath"

	"github.com/rbee/rbee-hive/internal/models"
)

// ResolveModel resolves a model reference (as a spawn would) to its file
// and size. Errors are *Error.
func (h *Hive) ResolveModel(ref string) (string, int64, error) {
	path, size, err := h.resolver.Resolve(ref, "")
	return path, size, wrapErr(err)
}

// ModelRoots returns the directories model files must lie in; the first
// is where relative file: references of `models:` entries point.
func (h *Hive) ModelRoots() []string {
	if len(h.cfg.ModelRoots) > 0 {
		return append([]string(nil), h.cfg.ModelRoots...)
	}
	return []string{filepath.Join(h.stateDir, "models")}
}

// AddModel adds a catalog entry after checking that path lies inside a model
// root. Errors are *Error.
func (h *Hive) AddModel(ref, path string) (models.Entry, error) {
	if _, _, err := models.ParseRef(ref); err != nil {
		return models.Entry{}, wrapErr(err)
	}
	resolved, _, err := h.resolver.CheckPath(path)
	if err != nil {
		return models.Entry{}, wrapErr(err)
	}
	e, err := h.catalog.Add(ref, resolved)
	return e, wrapErr(err)
}

// RemoveModel removes the catalog entry of ref. Errors are *Error.
func (h *Hive) RemoveModel(ref string) error {
	if _, _, err := models.ParseRef(ref); err != nil {
		return wrapErr(err)
	}
	return wrapErr(h.catalog.Remove(ref))
}
