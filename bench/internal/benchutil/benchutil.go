// Package benchutil holds the small helpers the bench programs share: parsing a
// size flag and measuring a directory tree.
package benchutil

import (
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strconv"
	"strings"
)

// ParseSize parses a byte count: a plain number of bytes, or a number followed
// by KiB, MiB or GiB ("1.5GiB") or by the decimal KB, MB or GB. Fractions are
// allowed and rounded down to whole bytes.
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = v, u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a number of bytes, or N followed by KiB, MiB, GiB, KB, MB or GB", s)
	}
	return int64(f * float64(mult)), nil
}

// DirSize returns the total size of the regular files below dir. Entries that
// cannot be read are skipped: it measures, it does not check.
func DirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
		}
		return nil
	})
	return n
}
