package api

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/apiv1"
	"github.com/rbee/rbee-hive/internal/hive"
)

// Every hive error kind has its status and code (SPEC §4, docs/api.md's
// table); a kind added to hive without a row here fails.
func TestEveryHiveKindMapsToItsStatusAndCode(t *testing.T) {
	want := map[hive.Kind]struct {
		status int
		code   string
	}{
		hive.Internal:           {500, apiv1.CodeInternal},
		hive.InvalidInput:       {400, "INVALID_BACKEND"}, // the error's own field code
		hive.WorkerNotFound:     {404, "WORKER_NOT_FOUND"},
		hive.ModelNotFound:      {404, "MODEL_NOT_FOUND"},
		hive.InvalidState:       {409, "INVALID_STATE"},
		hive.LimitsUnsupported:  {422, "LIMITS_UNSUPPORTED"},
		hive.SpawnFailed:        {500, "SPAWN_FAILED"},
		hive.NoPorts:            {503, "NO_AVAILABLE_PORTS"},
		hive.TooManyWorkers:     {503, "TOO_MANY_WORKERS"},
		hive.ShuttingDown:       {503, "SHUTTING_DOWN"},
		hive.InsufficientMemory: {507, "INSUFFICIENT_MEMORY"},
		hive.InsufficientVRAM:   {507, "INSUFFICIENT_VRAM"},
	}
	kinds := hive.Kinds()
	if len(kinds) != len(want) {
		t.Errorf("hive has %d kinds, the table %d", len(kinds), len(want))
	}
	for _, k := range kinds {
		w, ok := want[k]
		if !ok {
			t.Errorf("kind %v has no row", k)
			continue
		}
		code := ""
		if k == hive.InvalidInput {
			code = "INVALID_BACKEND"
		}
		if status, c := kindStatus(k, code); status != w.status || c != w.code {
			t.Errorf("kindStatus(%v) = %d %s, want %d %s", k, status, c, w.status, w.code)
		}
		// Through the renderer: the status, the code and the cause's text
		// (INTERNAL's message is prefixed and the cause is logged).
		cause := errors.New("the cause")
		rec := httptest.NewRecorder()
		writeError(rec, slog.New(slog.DiscardHandler), &hive.Error{Kind: k, Code: code, Err: cause})
		body := rec.Body.String()
		if rec.Code != w.status || !strings.Contains(body, `"code":"`+w.code+`"`) || !strings.Contains(body, `"message":"`) ||
			!strings.Contains(body, "the cause") {
			t.Errorf("kind %v rendered %d %s", k, rec.Code, body)
		}
	}
}

// A kind outside the list (a zero Error, a future kind) is a 500, never a
// client error.
func TestUnknownHiveKindIsInternal(t *testing.T) {
	if status, code := kindStatus(hive.Kind(1000), ""); status != http.StatusInternalServerError || code != apiv1.CodeInternal {
		t.Errorf("kindStatus(1000) = %d %s", status, code)
	}
}
