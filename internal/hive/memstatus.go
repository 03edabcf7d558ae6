package hive

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/rbee/rbee-hive/internal/apiv1"
)

// hostMemory reads the machine's total and available memory from
// /proc/meminfo for GET /v1/status (the console's memory bar). It returns
// nil when the file cannot be read or lacks either line.
func hostMemory() *apiv1.HostMemory {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil
	}
	return parseMeminfo(data)
}

func parseMeminfo(data []byte) *apiv1.HostMemory {
	var m apiv1.HostMemory
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "MemTotal" && name != "MemAvailable") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<52 {
			continue
		}
		if name == "MemTotal" {
			m.TotalBytes, haveTotal = kb*1024, true
		} else {
			m.AvailableBytes, haveAvail = kb*1024, true
		}
	}
	if !haveTotal || !haveAvail {
		return nil
	}
	return &m
}
