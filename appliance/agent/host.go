package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ingotdev/ingot/mgmt"
)

// HostUsage reads the machine's memory (procDir/meminfo), load average
// (procDir/loadavg) and the calling process's resident memory
// (procDir/self/status: the agent runs in PID 1, so this is init's) for
// mgmt.Status.Host; what it cannot read is named in the result's Error.
func HostUsage(procDir string) mgmt.HostStatus {
	var h mgmt.HostStatus
	var errs []error
	if b, err := os.ReadFile(procDir + "/meminfo"); err != nil {
		errs = append(errs, err)
	} else if h.MemTotalBytes, h.MemAvailableBytes, err = parseMeminfo(b); err != nil {
		errs = append(errs, fmt.Errorf("%s/meminfo: %w", procDir, err))
	}
	if b, err := os.ReadFile(procDir + "/loadavg"); err != nil {
		errs = append(errs, err)
	} else if h.Load, err = parseLoadavg(b); err != nil {
		errs = append(errs, fmt.Errorf("%s/loadavg: %w", procDir, err))
	}
	if b, err := os.ReadFile(procDir + "/self/status"); err != nil {
		errs = append(errs, err)
	} else if h.InitRSSBytes, err = parseVmRSS(b); err != nil {
		errs = append(errs, fmt.Errorf("%s/self/status: %w", procDir, err))
	}
	if err := errors.Join(errs...); err != nil {
		h.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return h
}

// parseMeminfo returns MemTotal and MemAvailable in bytes.
func parseMeminfo(b []byte) (total, available int64, err error) {
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "MemTotal" && key != "MemAvailable") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: %q: want a number of kB", key, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<53 {
			return 0, 0, fmt.Errorf("%s: %q: want a number of kB", key, f[0])
		}
		if key == "MemTotal" {
			total = kb << 10
		} else {
			available = kb << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("no MemTotal and MemAvailable lines")
	}
	return total, available, nil
}

// parseLoadavg returns the three load averages of /proc/loadavg.
func parseLoadavg(b []byte) ([3]float64, error) {
	var load [3]float64
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return load, fmt.Errorf("%q: want three load averages", strings.TrimSpace(string(b)))
	}
	for i := range load {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || v < 0 {
			return load, fmt.Errorf("field %d %q: want a load average", i+1, f[i])
		}
		load[i] = v
	}
	return load, nil
}

// parseVmRSS returns the VmRSS line of a /proc/PID/status in bytes.
func parseVmRSS(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != "VmRSS" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS: %q: want a number of kB", strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<53 {
			return 0, fmt.Errorf("VmRSS: %q: want a number of kB", f[0])
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmRSS line")
}
