package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// incarnationFile keeps, in the data dir, the last incarnation this server
// ran with.
const incarnationFile = "incarnation"

// nextIncarnation returns this run's incarnation: the clock in unix
// nanoseconds, and above the last run's in any case (dir's file, rewritten),
// so a clock stepped back across a restart cannot make a new run look like
// an earlier one, whose graceful leave the catalog may record
// (fsm.Node.DepartedIn). Without a data dir (in memory) it is the clock.
func nextIncarnation(dir string) (uint64, error) {
	inc := uint64(time.Now().UnixNano())
	if dir == "" {
		return inc, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("cluster: data dir: %w", err)
	}
	path := filepath.Join(dir, incarnationFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		last, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			return 0, fmt.Errorf("cluster: %s holds %q, not an incarnation (delete it to start afresh)", path, truncate(string(b), 40))
		}
		inc = max(inc, last+1)
	case !os.IsNotExist(err):
		return 0, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(inc, 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("cluster: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("cluster: %w", err)
	}
	return inc, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
