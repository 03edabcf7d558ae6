package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/rbee/rbee-hive/internal/apiv1"

	"github.com/rbee/rbee-hive/internal/clip"
)

// decode reads a JSON body strictly: bounded size, no unknown fields, no
// trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	return decodeJSON(data, v)
}

// readBody reads r's body whole, at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, apiv1.CodeBodyTooLarge, "request body over %d bytes", MaxBodyBytes)
		}
		return nil, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "reading body: %v", err)
	}
	return data, nil
}

// decodeJSON decodes data into v strictly: no unknown fields, no trailing
// data.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "invalid JSON body: %s", clip.String(err.Error(), 200))
	}
	// Only the end of the input may follow (dec.More would let a stray
	// "}" or "]" through).
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "invalid JSON body: trailing data after the object")
	}
	return nil
}
