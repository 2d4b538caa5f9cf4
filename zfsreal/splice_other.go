//go:build !linux

package zfsreal

import (
	"errors"
	"os"
)

func enlargePipe(*os.File, int) {}

var errSpliceUnsupported = errors.New("splice not supported here")

func splicePipe(dst, src *os.File, passed func(int64)) (int64, error) {
	return 0, errSpliceUnsupported
}

type srcError struct{ err error }

func (e *srcError) Error() string { return e.err.Error() }
func (e *srcError) Unwrap() error { return e.err }
