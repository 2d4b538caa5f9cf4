package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// DefaultLocations are where the config is looked for when none is given,
// in zrepl's order.
var DefaultLocations = []string{"/etc/zrepl/zrepl.yml", "/usr/local/etc/zrepl/zrepl.yml"}

// FindFile returns path if it is not empty, else the first of locations
// that exists, which must be a regular file (zrepl's rule too).
func FindFile(path string, locations []string) (string, error) {
	if path != "" {
		return path, nil
	}
	for _, l := range locations {
		st, err := os.Stat(l)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", fmt.Errorf("config file at default location %s: %w", l, err)
		case !st.Mode().IsRegular():
			return "", fmt.Errorf("config file at default location %s is not a regular file", l)
		}
		return l, nil
	}
	return "", fmt.Errorf("no config file: none of %s exists (want one of them, or --config FILE)", strings.Join(locations, ", "))
}
