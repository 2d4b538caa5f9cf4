package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"zrepl.dev/zrepl/engine/config"
)

// LockFile is the name of the lock file in each directory a daemon owns.
const LockFile = "zrepl.lock"

// ErrStateLocked is matched by the error of LockState when another
// process holds a directory of the state.
var ErrStateLocked = errors.New("in use by another zrepl process")

// LockedError says which directory is held, and by whom.
type LockedError struct {
	// What names the directory by its config key.
	What string
	Dir  string
	// PID is the holder's, 0 if it did not write it (yet).
	PID int
}

func (e *LockedError) Error() string {
	who := "another zrepl process"
	if e.PID > 0 {
		who = fmt.Sprintf("zrepl process %d", e.PID)
	}
	return fmt.Sprintf("%s %s is held by %s (its %s): a daemon owns it while it runs", e.What, e.Dir, who, LockFile)
}

func (e *LockedError) Unwrap() error { return ErrStateLocked }

// StateLock is held while a process owns a config's state.
type StateLock struct {
	files []*os.File
}

// Release drops the locks (also on a nil lock).
func (l *StateLock) Release() {
	if l == nil {
		return
	}
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
}

// StateDir is a directory a daemon owns, named by its config key.
type StateDir struct {
	What, Path string
}

// StateDirs are the directories a daemon of c owns while it runs: the
// model backend's model_state_dir and the control socket's directory.
// Two daemons on one model state would overwrite each other's saves; two
// daemons with one control socket would run the same jobs side by side.
func StateDirs(c *config.Config) []StateDir {
	var out []StateDir
	if c.Global.ZFSBackend == config.BackendModel && c.Global.ModelStateDir != "" {
		out = append(out, StateDir{"global.model_state_dir", c.Global.ModelStateDir})
	}
	if c.Global.ControlSockPath != "" {
		out = append(out, StateDir{"the directory of global.control.sockpath", filepath.Dir(c.Global.ControlSockPath)})
	}
	return out
}

// LockState takes an exclusive lock (flock of LockFile, which then holds
// the PID) on each of StateDirs(c), creating the directories (mode 0700)
// as needed. A daemon holds it while it runs; so does a CLI command that
// changes the backend without one (--offline). Where another process holds
// a directory, the error is a *LockedError naming it and the holder's PID.
// One directory named twice (state and socket side by side) is locked
// once.
func LockState(c *config.Config) (*StateLock, error) {
	return lockState(c, true)
}

// ProbeState fails as LockState does while a process holds the state, but
// takes no lock and creates nothing: for commands that only read.
func ProbeState(c *config.Config) error {
	l, err := lockState(c, false)
	l.Release()
	return err
}

func lockState(c *config.Config, exclusive bool) (*StateLock, error) {
	l := &StateLock{}
	var seen []os.FileInfo
	for _, d := range StateDirs(c) {
		what, dir := d.What, d.Path
		if exclusive {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				l.Release()
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		fi, err := os.Stat(dir)
		if !exclusive && errors.Is(err, os.ErrNotExist) {
			continue // no daemon ever ran there
		}
		if err != nil {
			l.Release()
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		dup := false
		for _, s := range seen {
			dup = dup || os.SameFile(s, fi)
		}
		if dup {
			continue
		}
		seen = append(seen, fi)
		f, err := lockDir(what, dir, exclusive)
		if err != nil {
			l.Release()
			return nil, err
		}
		if f != nil {
			l.files = append(l.files, f)
		}
	}
	return l, nil
}

// lockDir locks dir's lock file: exclusively (creating it, writing our
// PID) or shared (only if it exists). A nil file means there was nothing
// to lock.
func lockDir(what, dir string, exclusive bool) (*os.File, error) {
	path := filepath.Join(dir, LockFile)
	flags, how := os.O_RDONLY, syscall.LOCK_SH
	if exclusive {
		flags, how = os.O_RDWR|os.O_CREATE, syscall.LOCK_EX
	}
	f, err := os.OpenFile(path, flags|syscall.O_CLOEXEC, 0o600)
	if !exclusive && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: lock: %w", what, err)
	}
	if err := flock(f, how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{What: what, Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("%s: lock %s: %w", what, path, err)
	}
	if exclusive {
		if err := writePID(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: lock %s: %w", what, path, err)
		}
	}
	return f, nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
