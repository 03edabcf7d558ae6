package apiv1

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// DeviceAuto in SpawnRequest.Device asks the hive to pick the GPU: the one
// with the most free VRAM that holds the worker (SPEC §11). On the wire it
// is the string "auto". It is a value no wire number decodes to (those are
// 32-bit), so "device": -1 stays an invalid index.
const DeviceAuto = math.MinInt

// spawnRequestWire is SpawnRequest with device as it comes on the wire.
type spawnRequestWire struct {
	ModelRef  string            `json:"model_ref"`
	Backend   string            `json:"backend,omitempty"`
	Device    json.RawMessage   `json:"device,omitempty"`
	ModelPath string            `json:"model_path,omitempty"`
	Profile   string            `json:"profile,omitempty"`
	Settings  json.RawMessage   `json:"settings,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// UnmarshalJSON reads a spawn request, strictly (unknown fields are
// errors), with "device" a number or "auto".
func (r *SpawnRequest) UnmarshalJSON(b []byte) error {
	var w spawnRequestWire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	*r = SpawnRequest{ModelRef: w.ModelRef, Backend: w.Backend, ModelPath: w.ModelPath, Profile: w.Profile,
		Settings: w.Settings, Env: w.Env, Labels: w.Labels}
	d := bytes.TrimSpace(w.Device)
	switch {
	case len(d) == 0 || string(d) == "null":
	case string(d) == `"auto"`:
		r.Device, r.DeviceGiven = DeviceAuto, true
	default:
		n, err := strconv.ParseInt(string(d), 10, 32)
		if err != nil {
			return errDevice
		}
		r.Device, r.DeviceGiven = int(n), true
	}
	return nil
}

// MarshalJSON writes DeviceAuto as "auto", and leaves out a device 0
// that was not given (so that a GPU worker is placed by auto).
func (r SpawnRequest) MarshalJSON() ([]byte, error) {
	w := spawnRequestWire{ModelRef: r.ModelRef, Backend: r.Backend, ModelPath: r.ModelPath, Profile: r.Profile,
		Settings: r.Settings, Env: r.Env, Labels: r.Labels}
	switch {
	case r.Device == DeviceAuto:
		w.Device = json.RawMessage(`"auto"`)
	case r.Device != 0 || r.DeviceGiven:
		w.Device = json.RawMessage(strconv.Itoa(r.Device))
	}
	return json.Marshal(w)
}

// errDevice: "device" is neither an integer nor "auto" (the API answers
// 400 INVALID_REQUEST, as for any badly typed field).
var errDevice = errors.New(`device must be a GPU index or "auto"`)
