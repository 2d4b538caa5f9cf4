package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
)

func lockConfig(state, sock string) *config.Config {
	return &config.Config{Global: config.Global{ZFSBackend: config.BackendModel, ModelStateDir: state, ControlSockPath: sock}}
}

// flock conflicts between two opens even in one process, so a second
// LockState here stands for a second daemon.
func TestLockState(t *testing.T) {
	dir := t.TempDir()
	state, sockDir := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	assert.NoError(t, ProbeState(lockConfig(state, filepath.Join(sockDir, "control"))))
	_, err := os.Stat(state)
	assert.ErrorIs(t, err, os.ErrNotExist, "a probe creates nothing")

	// State and socket in one directory: locked once, not against itself.
	same := lockConfig(state, filepath.Join(state, "control"))
	l, err := LockState(same)
	require.NoError(t, err)
	fi, err := os.Stat(state)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	for _, c := range []*config.Config{same, lockConfig(state, filepath.Join(sockDir, "control")), lockConfig(filepath.Join(dir, "other"), filepath.Join(state, "sock"))} {
		_, err = LockState(c)
		var le *LockedError
		require.True(t, errors.As(err, &le), "%v", err)
		assert.ErrorIs(t, err, ErrStateLocked)
		assert.Equal(t, os.Getpid(), le.PID)
		assert.Equal(t, state, le.Dir)
		assert.ErrorContains(t, ProbeState(c), "is held by zrepl process")
	}
	o, err := LockState(lockConfig(filepath.Join(dir, "other"), filepath.Join(dir, "other", "c")))
	require.NoError(t, err, "a refused lock released what it took")
	o.Release()

	l.Release()
	l.Release()
	assert.NoError(t, ProbeState(same))
	l, err = LockState(lockConfig(state, filepath.Join(sockDir, "control")))
	require.NoError(t, err)
	l.Release()

	// The real backend has no state dir: only the socket's is locked.
	real := &config.Config{Global: config.Global{ZFSBackend: config.BackendReal, ModelStateDir: state, ControlSockPath: filepath.Join(sockDir, "c")}}
	assert.Equal(t, []StateDir{{"the directory of global.control.sockpath", sockDir}}, StateDirs(real))
}
