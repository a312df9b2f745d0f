package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits maps size suffixes to their factor. Binary suffixes (Ki, Mi,
// KiB, MiB, ...) are powers of 1024; bare K, M, G and KB, MB, GB are powers
// of 1000, as in Kubernetes resource quantities and SI.
var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"k": 1e3, "K": 1e3, "KB": 1e3, "kB": 1e3,
	"M": 1e6, "MB": 1e6,
	"G": 1e9, "GB": 1e9,
	"T": 1e12, "TB": 1e12,
	"Ki": 1 << 10, "KiB": 1 << 10,
	"Mi": 1 << 20, "MiB": 1 << 20,
	"Gi": 1 << 30, "GiB": 1 << 30,
	"Ti": 1 << 40, "TiB": 1 << 40,
}

// ParseSize parses a byte count: a non-negative integer with an optional
// unit, "4096", "64Mi", "1GiB", "500M" (decimal: 500 000 000 bytes).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size (like 64Mi, 1GiB or 4096)", s)
	}
	unit := strings.TrimSpace(t[i:])
	factor, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("%q has unknown unit %q (use B, Ki, Mi, Gi, Ti, or K, M, G, T)", s, unit)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/factor {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * factor, nil
}

// FormatSize writes n bytes in the shortest exact binary unit ("64Mi").
func FormatSize(n int64) string {
	for _, u := range []struct {
		name  string
		bytes int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n != 0 && n%u.bytes == 0 {
			return strconv.FormatInt(n/u.bytes, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// minCPUMillis is the smallest quota cgroup v2 accepts with the default
// period (1 ms per 100 ms).
const minCPUMillis = 10

// ParseCPU parses a CPU quota: a number of CPUs ("0.5", "2") or
// thousandths of a CPU ("500m"), and returns thousandths.
func ParseCPU(s string) (int64, error) {
	t := strings.TrimSpace(s)
	var millis int64
	if m, ok := strings.CutSuffix(t, "m"); ok {
		n, err := strconv.ParseInt(m, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a CPU quota (like 0.5, 2 or 500m)", s)
		}
		millis = n
	} else {
		f, err := strconv.ParseFloat(t, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e6 {
			return 0, fmt.Errorf("%q is not a CPU quota (like 0.5, 2 or 500m)", s)
		}
		millis = int64(math.Round(f * 1000))
	}
	if millis < minCPUMillis {
		return 0, fmt.Errorf("%q is below the smallest quota, %dm (0.01 CPU)", s, minCPUMillis)
	}
	return millis, nil
}
