package planner

import (
	"fmt"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// validateRelPath checks a path relative to the job's namespace: one or
// more components separated by "/", each a valid ZFS name component.
func validateRelPath(p string) error {
	const what = "relative filesystem path"
	if p == "" {
		return &zfs.NameError{Name: p, What: what, Reason: "empty path", Pos: -1}
	}
	if len(p) >= zfs.MaxNameLen {
		return &zfs.NameError{Name: p, What: what, Reason: fmt.Sprintf("path is %d bytes, the limit is %d", len(p), zfs.MaxNameLen-1), Pos: -1}
	}
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if !zfs.ValidNameChar(p[i]) {
				return &zfs.NameError{Name: p, What: what, Reason: fmt.Sprintf("invalid character %q", p[i]), Pos: i}
			}
			continue
		}
		switch p[start:i] {
		case "":
			return &zfs.NameError{Name: p, What: what, Reason: "empty component", Pos: start}
		case ".", "..":
			return &zfs.NameError{Name: p, What: what, Reason: fmt.Sprintf("component is %q", p[start:i]), Pos: start}
		}
		start = i + 1
	}
	return nil
}

// parentPath is p without its last component; "" for a top-level path.
func parentPath(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ""
	}
	return p[:i]
}

// comparePaths orders paths component by component, which is a pre-order
// walk of the tree: a parent comes right before its subtree. Plain string
// order would put "a-b" between "a" and "a/b", because ' ', '-' and '.'
// sort before '/'.
func comparePaths(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		if ca < cb {
			return -1
		}
		return 1
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
