package frontdoor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Estimator returns the memory a worker serving the model file at path
// with context size ctx needs, in bytes.
type Estimator func(path string, ctx int) (int64, error)

// EstimateFromFile is the default Estimator until the GGUF-based estimate
// of SPEC §11 (internal/gguf) lands: the weights (the file's size) plus,
// for a GGUF file, the KV cache at ctx (f16 K and V for every layer, from
// the header's block_count, embedding_length and head counts; ctx 0 takes
// the model's context_length), plus a tenth for compute buffers. A file
// that is not GGUF is estimated at its size × 1.2, the memory preflight's
// rule (SPEC §3). A model entry's, profile's or settings' memory_bytes
// overrides it.
//
// TODO(merge): switch to internal/gguf's estimate once it is on main; the
// minimal header reading below exists only for this estimate.
func EstimateFromFile(path string, ctx int) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("estimate: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("estimate: %w", err)
	}
	size := fi.Size()
	h, err := readGGUFHeader(bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		return size + size/5, nil
	}
	if ctx <= 0 {
		ctx = int(h.contextLength)
	}
	var kv int64
	if h.layers > 0 && h.embd > 0 && h.heads > 0 && ctx > 0 {
		headsKV := h.headsKV
		if headsKV == 0 {
			headsKV = h.heads
		}
		embdKV := h.embd * headsKV / h.heads
		kv = 2 * int64(h.layers) * int64(ctx) * int64(embdKV) * 2 // K and V, f16
	}
	return size + kv + (size+kv)/10, nil
}

// ggufHeader is the little of a GGUF header the estimate needs.
type ggufHeader struct {
	layers, embd, heads, headsKV, contextLength uint64
}

var errNotGGUF = errors.New("not a GGUF file")

// readGGUFHeader reads the metadata of a GGUF (v2, v3) file and picks the
// model's shape out of it. Only for EstimateFromFile (see its TODO).
func readGGUFHeader(r io.Reader) (ggufHeader, error) {
	var h ggufHeader
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || string(magic[:]) != "GGUF" {
		return h, errNotGGUF
	}
	var version uint32
	var nTensors, nKV uint64
	if err := binary.Read(r, binary.LittleEndian, &version); err != nil || version < 2 || version > 3 {
		return h, errNotGGUF
	}
	if binary.Read(r, binary.LittleEndian, &nTensors) != nil || binary.Read(r, binary.LittleEndian, &nKV) != nil || nKV > 1<<20 {
		return h, errNotGGUF
	}
	arch := ""
	vals := map[string]uint64{}
	for i := uint64(0); i < nKV; i++ {
		key, err := ggufString(r)
		if err != nil {
			return h, err
		}
		var typ uint32
		if err := binary.Read(r, binary.LittleEndian, &typ); err != nil {
			return h, err
		}
		if typ == ggufString_ && key == "general.architecture" {
			if arch, err = ggufString(r); err != nil {
				return h, err
			}
			continue
		}
		n, err := ggufValue(r, typ, 0)
		if err != nil {
			return h, err
		}
		vals[key] = n
	}
	h.layers = vals[arch+".block_count"]
	h.embd = vals[arch+".embedding_length"]
	h.heads = vals[arch+".attention.head_count"]
	h.headsKV = vals[arch+".attention.head_count_kv"]
	h.contextLength = vals[arch+".context_length"]
	return h, nil
}

const ggufString_ = 8

func ggufString(r io.Reader) (string, error) {
	var n uint64
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return "", err
	}
	if n > 1<<20 {
		return "", errNotGGUF
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return string(b), err
}

// ggufValue reads (or skips) one value of type typ and returns it as a
// number when it is an unsigned or signed integer.
func ggufValue(r io.Reader, typ uint32, depth int) (uint64, error) {
	size := map[uint32]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	switch {
	case typ == ggufString_:
		_, err := ggufString(r)
		return 0, err
	case typ == 9: // array
		if depth > 2 {
			return 0, errNotGGUF
		}
		var et uint32
		var n uint64
		if binary.Read(r, binary.LittleEndian, &et) != nil || binary.Read(r, binary.LittleEndian, &n) != nil || n > 1<<26 {
			return 0, errNotGGUF
		}
		if s, ok := size[et]; ok {
			_, err := io.CopyN(io.Discard, r, int64(s)*int64(n))
			return 0, err
		}
		for i := uint64(0); i < n; i++ {
			if _, err := ggufValue(r, et, depth+1); err != nil {
				return 0, err
			}
		}
		return 0, nil
	}
	s, ok := size[typ]
	if !ok {
		return 0, errNotGGUF
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:s]); err != nil {
		return 0, err
	}
	switch typ {
	case 0, 1, 7:
		return uint64(b[0]), nil
	case 2, 3:
		return uint64(binary.LittleEndian.Uint16(b[:2])), nil
	case 4, 5:
		return uint64(binary.LittleEndian.Uint32(b[:4])), nil
	case 10, 11:
		return binary.LittleEndian.Uint64(b[:8]), nil
	}
	return 0, nil // floats are not needed
}
