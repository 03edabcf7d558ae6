package frontdoor

import (
	"errors"
	"fmt"
	"os"

	"github.com/rbee/rbee-hive/internal/modelsize"
)

// Estimator returns the memory a worker serving the model file at path
// with context size ctx needs, in bytes.
type Estimator func(path string, ctx int) (int64, error)

// EstimateFromFile is the default Estimator: the RAM a CPU worker of a
// GGUF model needs at ctx (internal/modelsize: weights, KV cache, compute
// buffers, from the file's header). A file that is not GGUF is estimated
// at its size × 1.2, the memory preflight's rule (SPEC §3). A model
// entry's, profile's or settings' memory_bytes overrides it.
func EstimateFromFile(path string, ctx int) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("estimate: %w", err)
	}
	ram, _, err := modelsize.Estimate(path, ctx, 0)
	switch {
	case err == nil && ram > 0:
		return ram, nil
	case err == nil, errors.Is(err, modelsize.ErrNotGGUF):
		return fi.Size() + fi.Size()/5, nil
	}
	return 0, fmt.Errorf("estimate: %w", err)
}
