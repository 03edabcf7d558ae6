package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// strictDecode is the API's strict decoder (decode) on body.
func strictDecode(body []byte) (apiv1.HeartbeatRequest, error) {
	var hb apiv1.HeartbeatRequest
	r := httptest.NewRequest(http.MethodPost, "/v1/heartbeat", bytes.NewReader(body))
	err := decode(httptest.NewRecorder(), r, &hb)
	return hb, err
}

func heartbeatSeeds(t testing.TB) [][]byte {
	n, m := 4, 0
	bodies := []apiv1.HeartbeatRequest{
		{WorkerID: "worker-0b5e1c1e-6a77-4c53-9a55-3c1b2a3c4d5e", Timestamp: "2026-11-29T05:00:00.123456789Z", HealthStatus: "healthy", State: "idle"},
		{WorkerID: "w", Timestamp: "2026-11-29T05:00:00Z", HealthStatus: "degraded"},
		{WorkerID: "w", Timestamp: "x", HealthStatus: "healthy", State: "busy", SlotsTotal: &n, SlotsAvailable: &m},
		{WorkerID: "w", Timestamp: "x", HealthStatus: "healthy", State: "loading", Progress: &apiv1.Progress{Done: 12345, Total: 987654321}},
	}
	var out [][]byte
	for _, hb := range bodies {
		b, err := json.Marshal(hb)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// What workers send takes the fast path and gives what the strict decoder
// gives.
func TestParseHeartbeatTakesWhatWorkersSend(t *testing.T) {
	for _, b := range heartbeatSeeds(t) {
		got, ok := parseHeartbeat(b)
		if !ok {
			t.Fatalf("fast path refused %s", b)
		}
		want, err := strictDecode(b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: fast %+v, strict %+v (%v)", b, got, want, err)
		}
	}
	// Anything else is left to the strict decoder.
	for _, b := range []string{
		``, `{`, `{}x`, ` {}`, `{"worker_id":"a","worker_id":"b"}`, `{"Worker_ID":"a"}`, `{"extra":1}`,
		`{"worker_id":"a\u0041"}`, `{"worker_id":"é"}`, `{"slots_total":-1}`, `{"slots_total":01}`,
		`{"slots_total":1e3}`, `{"slots_total":null}`, `{"progress":{"done":1,"done":2}}`,
		`{"progress":{"other":1}}`, `{"worker_id":"a",}`, `{"slots_total":1234567890123456}`,
	} {
		if _, ok := parseHeartbeat([]byte(b)); ok {
			t.Errorf("fast path took %q", b)
		}
	}
}

// Where the fast path takes a body, the strict decoder takes it too and
// gives the same heartbeat.
func FuzzParseHeartbeatAgreesWithDecode(f *testing.F) {
	for _, b := range heartbeatSeeds(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"worker_id":"a","progress":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseHeartbeat(b)
		if !ok {
			return
		}
		want, err := strictDecode(b)
		if err != nil {
			t.Fatalf("fast path took %q, the strict decoder refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast %+v, strict %+v", b, got, want)
		}
	})
}

// The heartbeat's prepared answer is the one writeJSON writes.
func TestHeartbeatAnswerIsWriteJSONs(t *testing.T) {
	rec := httptest.NewRecorder()
	writeJSON(rec, http.StatusOK, apiv1.Message{Message: "Heartbeat received"})
	if got := rec.Body.String(); got != string(heartbeatAnswer) {
		t.Fatalf("writeJSON wrote %q, the heartbeat answers %q", got, heartbeatAnswer)
	}
}
