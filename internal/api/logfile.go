package api

import (
	"bytes"
	"io"
	"os"
	"strings"

	"github.com/rbee/rbee-hive/internal/supervisor"
)

type workerRef struct{ w *supervisor.Worker }

// tailFile returns the last n lines of the file at path, reading at most
// the last 4 MiB.
func tailFile(path string, n int) ([]string, error) {
	if n == 0 {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const window = 4 << 20
	off := max(fi.Size()-window, 0)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, window))
	if err != nil {
		return nil, err
	}
	if off > 0 {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	s := strings.TrimSuffix(strings.ToValidUTF8(string(data), "\uFFFD"), "\n")
	if s == "" {
		return nil, nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}
