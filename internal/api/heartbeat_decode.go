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
	ok := p.object(func(key string) (bit uint8, ok bool) {
		switch key {
		case "worker_id":
			hb.WorkerID, ok = p.str()
			return 1, ok
		case "timestamp":
			hb.Timestamp, ok = p.str()
			return 2, ok
		case "health_status":
			hb.HealthStatus, ok = p.str()
			return 4, ok
		case "state":
			hb.State, ok = p.str()
			return 8, ok
		case "slots_total":
			hb.SlotsTotal, ok = p.intPtr()
			return 16, ok
		case "slots_available":
			hb.SlotsAvailable, ok = p.intPtr()
			return 32, ok
		case "progress":
			pr := &apiv1.Progress{}
			hb.Progress = pr
			return 64, p.object(func(key string) (bit uint8, ok bool) {
				switch key {
				case "done":
					pr.Done, ok = p.int()
					return 1, ok
				case "total":
					pr.Total, ok = p.int()
					return 2, ok
				}
				return 0, false
			})
		}
		return 0, false
	})
	return hb, ok && p.i == len(p.b)
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

func (p *hbParser) intPtr() (*int, bool) {
	n, ok := p.int()
	v := int(n)
	return &v, ok
}

// object reads {"key":value,...}: field reads key's value and says which
// bit names the key; each key may come once, and an unknown key (bit 0)
// ends the fast path.
func (p *hbParser) object(field func(key string) (bit uint8, ok bool)) bool {
	if !p.byte('{') {
		return false
	}
	var seen uint8
	for first := true; ; first = false {
		if p.byte('}') {
			return true
		}
		if !first && !p.byte(',') {
			return false
		}
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		bit, ok := field(key)
		if !ok || bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
}
