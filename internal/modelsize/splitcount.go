package modelsize

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// maxSplitTensors bounds a file's split.tensors.count (every tensor of every
// shard): real models have a few thousand.
const maxSplitTensors = 1 << 20

// checkSplitTensorsCount reads the metadata of the GGUF file at path and
// refuses a split.tensors.count above maxSplitTensors. The parser sizes its
// tensor table from that value before reading a tensor, so a small file
// declaring 2^32-1 made the hive ask for hundreds of gigabytes: a fatal
// out-of-memory that no recover catches. A file this scan cannot read is
// left to the parser, which reports it.
func checkSplitTensorsCount(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // the parser reports it
	}
	defer f.Close()
	n, err := splitTensorsCount(bufio.NewReader(f))
	if err == nil && n > maxSplitTensors {
		return fmt.Errorf("split.tensors.count %d is above %d", n, maxSplitTensors)
	}
	return nil
}

type hdrReader struct {
	r   *bufio.Reader
	bo  binary.ByteOrder
	v1  bool
	buf [8]byte
}

func (h *hdrReader) u32() (uint32, error) {
	if _, err := io.ReadFull(h.r, h.buf[:4]); err != nil {
		return 0, err
	}
	return h.bo.Uint32(h.buf[:4]), nil
}

func (h *hdrReader) u64() (uint64, error) {
	if _, err := io.ReadFull(h.r, h.buf[:8]); err != nil {
		return 0, err
	}
	return h.bo.Uint64(h.buf[:8]), nil
}

// count reads a count or length: 32 bits in version 1, 64 after.
func (h *hdrReader) count() (uint64, error) {
	if h.v1 {
		n, err := h.u32()
		return uint64(n), err
	}
	return h.u64()
}

func (h *hdrReader) skip(n uint64) error {
	for n > 0 {
		c := min(n, 1<<30)
		if _, err := h.r.Discard(int(c)); err != nil {
			return err
		}
		n -= c
	}
	return nil
}

var errScan = errors.New("unreadable header")

// scalarSize is the size of GGUF metadata scalar type t, 0 otherwise.
func scalarSize(t uint32) uint64 {
	switch t {
	case 0, 1, 7:
		return 1
	case 2, 3:
		return 2
	case 4, 5, 6:
		return 4
	case 10, 11, 12:
		return 8
	}
	return 0
}

// value reads (skips) a value of type t, returning it when it is an integer.
func (h *hdrReader) value(t uint32, depth int) (uint64, error) {
	switch t {
	case 8: // string
		n, err := h.count()
		if err != nil {
			return 0, err
		}
		return 0, h.skip(n)
	case 9: // array
		if depth > 4 {
			return 0, errScan
		}
		et, err := h.u32()
		if err != nil {
			return 0, err
		}
		n, err := h.count()
		if err != nil {
			return 0, err
		}
		if s := scalarSize(et); s > 0 {
			if n > (1<<62)/s {
				return 0, errScan
			}
			return 0, h.skip(n * s)
		}
		for range n {
			if _, err := h.value(et, depth+1); err != nil {
				return 0, err
			}
		}
		return 0, nil
	}
	s := scalarSize(t)
	if s == 0 {
		return 0, errScan
	}
	if _, err := io.ReadFull(h.r, h.buf[:s]); err != nil {
		return 0, err
	}
	switch s {
	case 1:
		return uint64(h.buf[0]), nil
	case 2:
		return uint64(h.bo.Uint16(h.buf[:2])), nil
	case 4:
		return uint64(h.bo.Uint32(h.buf[:4])), nil
	}
	return h.bo.Uint64(h.buf[:8]), nil
}

// splitTensorsCount returns the file's split.tensors.count, 0 when absent.
// Signed values are read as their bits: a negative count is as absurd as a
// huge one.
func splitTensorsCount(r *bufio.Reader) (uint64, error) {
	h := &hdrReader{r: r, bo: binary.LittleEndian}
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return 0, err
	}
	switch string(magic[:]) {
	case "GGUF":
	case "FUGG":
		h.bo = binary.BigEndian
	default:
		return 0, errScan
	}
	v, err := h.u32()
	if err != nil {
		return 0, err
	}
	h.v1 = v <= 1
	if _, err := h.count(); err != nil { // tensor count
		return 0, err
	}
	nkv, err := h.count()
	if err != nil {
		return 0, err
	}
	for range nkv {
		kl, err := h.count()
		if err != nil {
			return 0, err
		}
		if kl > 1<<16 {
			return 0, errScan
		}
		key := make([]byte, kl)
		if _, err := io.ReadFull(r, key); err != nil {
			return 0, err
		}
		t, err := h.u32()
		if err != nil {
			return 0, err
		}
		val, err := h.value(t, 0)
		if err != nil {
			return 0, err
		}
		if string(key) == "split.tensors.count" {
			switch t {
			case 6: // float32: the parser converts it
				val = floatCount(float64(math.Float32frombits(uint32(val))))
			case 12:
				val = floatCount(math.Float64frombits(val))
			case 8, 9:
				return 0, errScan
			}
			return val, nil
		}
	}
	return 0, nil
}

// floatCount is a float count as an unsigned one, a negative or NaN one
// absurd (math.MaxUint64).
func floatCount(f float64) uint64 {
	if !(f >= 0) || f >= math.MaxInt64 {
		return math.MaxUint64
	}
	return uint64(f)
}
