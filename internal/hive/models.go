package hive

import (
	"path/filepath"

	"github.com/rbee/rbee-hive/internal/models"
)

// ResolveModel resolves a model reference (as a spawn would) to its file
// and size.
func (h *Hive) ResolveModel(ref string) (string, int64, error) { return h.resolver.Resolve(ref, "") }

// ModelRoots returns the directories model files must lie in; the first
// is where relative file: references of `models:` entries point.
func (h *Hive) ModelRoots() []string {
	if len(h.cfg.ModelRoots) > 0 {
		return append([]string(nil), h.cfg.ModelRoots...)
	}
	return []string{filepath.Join(h.stateDir, "models")}
}

// AddModel adds a catalog entry after checking that path lies inside a model
// root.
func (h *Hive) AddModel(ref, path string) (models.Entry, error) {
	if _, _, err := models.ParseRef(ref); err != nil {
		return models.Entry{}, err
	}
	resolved, _, err := h.resolver.CheckPath(path)
	if err != nil {
		return models.Entry{}, err
	}
	return h.catalog.Add(ref, resolved)
}
