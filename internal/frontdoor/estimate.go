package frontdoor

import (
	"fmt"
	"os"
)

// Estimator returns the memory a worker serving the model file at path
// with context size ctx needs, in bytes.
type Estimator func(path string, ctx int) (int64, error)

// EstimateFromFile is the default Estimator until the GGUF-based estimate
// (internal/gguf, SPEC §11: weights + KV cache at ctx + compute buffers)
// lands: the file's size × 1.2, the same rule as the memory preflight
// (SPEC §3). A model entry's, profile's or settings' memory_bytes
// overrides it. ctx is not used yet.
//
// TODO(merge): switch to the GGUF estimate once internal/gguf is on main.
func EstimateFromFile(path string, ctx int) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("estimate: %w", err)
	}
	return fi.Size() + fi.Size()/5, nil
}
