package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every error Parse returns.
var ErrInvalid = errors.New("invalid config")

// Error is one problem in a config document.
type Error struct {
	// Path is the YAML path of the offending node, e.g.
	// "jobs[1].pruning.keep_sender[0]"; empty for the whole document.
	Path string
	// Line is 1-based; 0 if the problem has no place in the document.
	Line int
	Msg  string
	// File is the included file the problem is in (see include); empty
	// for the config file itself, which Errors.File names.
	File string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// In writes the problem prefixed with its file: the included file it is
// in, or else file (the config file).
func (e *Error) In(file string) string {
	if e.File != "" {
		file = e.File
	}
	if file == "" {
		return e.Error()
	}
	return file + ": " + e.Error()
}

// Is makes every *Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Errors is every problem found in one document, ordered by line.
type Errors struct {
	// File is the document's file name if it was read by ParseFile.
	File string
	List []*Error
}

// Error writes one problem a line, each prefixed with the file name if
// known.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, err := range e.List {
		lines[i] = err.In(e.File)
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the entries to errors.Is and errors.As.
func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.List))
	for i, err := range e.List {
		out[i] = err
	}
	return out
}

// Is makes *Errors match ErrInvalid even when the list is empty.
func (e *Errors) Is(target error) bool { return target == ErrInvalid }

// sort orders the problems by file (the config file first, then the
// included files in the order they are included) and line.
func (e *Errors) sort() {
	rank := map[string]int{"": 0}
	for _, x := range e.List {
		if _, ok := rank[x.File]; !ok {
			rank[x.File] = len(rank)
		}
	}
	sort.SliceStable(e.List, func(i, j int) bool {
		a, b := e.List[i], e.List[j]
		if a.File != b.File {
			return rank[a.File] < rank[b.File]
		}
		return a.Line < b.Line
	})
}
