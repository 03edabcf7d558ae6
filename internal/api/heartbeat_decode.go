package api

import (
	"github.com/rbee/rbee-hive/internal/apiv1"
)

// parseHeartbeat reads a heartbeat body in the form workers send it (what
// encoding/json writes for apiv1.HeartbeatRequest: one compact object,
// known keys each at most once, plain ASCII strings, non-negative
// integers). It reports false for anything else, and the caller then
// decodes strictly with encoding/json; where it reports true, the result is
// the one the strict decoder gives (FuzzParseHeartbeatAgreesWithDecode).
//
// Every worker sends one every heartbeat interval: at 1000 workers a
// hundred a second, where the reflection-based decoder was a tenth of an
// idle hive's CPU.
func parseHeartbeat(data []byte) (apiv1.HeartbeatRequest, bool) {
	var hb apiv1.HeartbeatRequest
	p := hbParser{b: data}
	if !p.byte('{') {
		return hb, false
	}
	var seen uint8
	for first := true; ; first = false {
		if p.byte('}') {
			return hb, p.i == len(p.b)
		}
		if !first && !p.byte(',') {
			return hb, false
		}
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return hb, false
		}
		var bit uint8
		switch key {
		case "worker_id":
			bit = 1
			hb.WorkerID, ok = p.str()
		case "timestamp":
			bit = 2
			hb.Timestamp, ok = p.str()
		case "health_status":
			bit = 4
			hb.HealthStatus, ok = p.str()
		case "state":
			bit = 8
			hb.State, ok = p.str()
		case "slots_total":
			bit = 16
			var n int64
			n, ok = p.int()
			v := int(n)
			hb.SlotsTotal = &v
		case "slots_available":
			bit = 32
			var n int64
			n, ok = p.int()
			v := int(n)
			hb.SlotsAvailable = &v
		case "progress":
			bit = 64
			hb.Progress, ok = p.progress()
		default:
			return hb, false
		}
		if !ok || seen&bit != 0 {
			return hb, false
		}
		seen |= bit
	}
}

type hbParser struct {
	b []byte
	i int
}

func (p *hbParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII without escapes.
func (p *hbParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
	}
	return "", false
}

// int reads a non-negative integer of at most 15 digits, without a leading
// zero (JSON has none).
func (p *hbParser) int() (int64, bool) {
	start := p.i
	var n int64
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		n = n*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 15 || (digits > 1 && p.b[start] == '0') {
		return 0, false
	}
	return n, true
}

func (p *hbParser) progress() (*apiv1.Progress, bool) {
	pr := &apiv1.Progress{}
	if !p.byte('{') {
		return nil, false
	}
	var seen uint8
	for first := true; ; first = false {
		if p.byte('}') {
			return pr, true
		}
		if !first && !p.byte(',') {
			return nil, false
		}
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return nil, false
		}
		var bit uint8
		switch key {
		case "done":
			bit = 1
			pr.Done, ok = p.int()
		case "total":
			bit = 2
			pr.Total, ok = p.int()
		default:
			return nil, false
		}
		if !ok || seen&bit != 0 {
			return nil, false
		}
		seen |= bit
	}
}
