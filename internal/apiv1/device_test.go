package apiv1

import (
	"encoding/json"
	"testing"
)

func TestSpawnRequestDeviceIsAnIndexOrAuto(t *testing.T) {
	for _, c := range []struct {
		body   string
		device int
		given  bool
	}{
		{`{"model_ref":"hf:a/b"}`, 0, false},
		{`{"model_ref":"hf:a/b","device":null}`, 0, false},
		{`{"model_ref":"hf:a/b","device":0}`, 0, true},
		{`{"model_ref":"hf:a/b","device":3}`, 3, true},
		{`{"model_ref":"hf:a/b","device":"auto"}`, DeviceAuto, true},
	} {
		var r SpawnRequest
		if err := json.Unmarshal([]byte(c.body), &r); err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if r.Device != c.device || r.DeviceGiven != c.given || r.ModelRef != "hf:a/b" {
			t.Errorf("%s: got device %d given %v", c.body, r.Device, r.DeviceGiven)
		}
		// What the Go client sends reads back the same.
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back SpawnRequest
		if err := json.Unmarshal(b, &back); err != nil || back.Device != r.Device || (back.DeviceGiven != r.DeviceGiven && r.Device != 0) {
			t.Errorf("%s: round trip %s gave %+v, %v", c.body, b, back, err)
		}
	}
	var neg SpawnRequest
	if err := json.Unmarshal([]byte(`{"device":-1}`), &neg); err != nil || neg.Device != -1 || neg.Device == DeviceAuto {
		t.Fatalf(`"device":-1 must stay the invalid index -1, got %d (%v)`, neg.Device, err)
	}
	for _, bad := range []string{`{"device":"gpu0"}`, `{"device":1.5}`, `{"device":1e30}`, `{"device":true}`, `{"bogus":1}`} {
		var r SpawnRequest
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
