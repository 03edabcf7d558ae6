package apiv1

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/rbee/rbee-hive/internal/config"
)

// WorkerInfo.Limits was config.Limits on the wire; its own type must
// marshal to the same bytes, field for field.
func TestLimitsJSONIsTheConfigLimitsJSON(t *testing.T) {
	const want = `{"memory_max_bytes":536870912,"cpu_max":1.5,"pids_max":64,"nofile":1024}`
	for _, c := range []struct {
		api  Limits
		conf config.Limits
		want string
	}{
		{Limits{536870912, 1.5, 64, 1024}, config.Limits{MemoryMaxBytes: 536870912, CPUMax: 1.5, PidsMax: 64, Nofile: 1024}, want},
		{Limits{}, config.Limits{}, `{"memory_max_bytes":0,"cpu_max":0,"pids_max":0,"nofile":0}`},
	} {
		a, err := json.Marshal(c.api)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(c.conf)
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != c.want || string(b) != c.want {
			t.Errorf("apiv1.Limits %s, config.Limits %s, want %s", a, b, c.want)
		}
	}
	// The same fields, types and JSON names in the same order: a field added
	// to one and not the other fails here.
	at, ct := reflect.TypeOf(Limits{}), reflect.TypeOf(config.Limits{})
	if at.NumField() != ct.NumField() {
		t.Fatalf("apiv1.Limits has %d fields, config.Limits %d", at.NumField(), ct.NumField())
	}
	for i := range at.NumField() {
		af, cf := at.Field(i), ct.Field(i)
		if af.Name != cf.Name || af.Type != cf.Type || af.Tag.Get("json") != cf.Tag.Get("json") {
			t.Errorf("field %d: apiv1 %s %s %q, config %s %s %q", i, af.Name, af.Type, af.Tag.Get("json"), cf.Name, cf.Type, cf.Tag.Get("json"))
		}
	}
	// Inside WorkerInfo, under "limits".
	wi, err := json.Marshal(WorkerInfo{Limits: Limits{536870912, 1.5, 64, 1024}})
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(wi, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["limits"]) != want {
		t.Errorf("WorkerInfo limits = %s, want %s", raw["limits"], want)
	}
}
