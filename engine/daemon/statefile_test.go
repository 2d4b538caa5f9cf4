package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// SaveFile fsyncs the new content before the rename and the directory
// after it: only then does a power loss keep the new state, rather than
// bring back the previous one (which, for the model backend, other hosts
// have moved on from).
func TestSaveFileSyncsDirectoryAfterRename(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "s.json")
	type syncCall struct {
		name     string
		dir      bool
		renamed  bool // dir/s.json had the new content at the time
		complete bool // the synced file held all of the new content
	}
	var calls []syncCall
	rec := func(f *os.File) error {
		fi, err := f.Stat()
		require.NoError(t, err)
		b, _ := os.ReadFile(path)
		c := syncCall{name: f.Name(), dir: fi.IsDir(), renamed: string(b) == "new"}
		if !c.dir {
			got, err := os.ReadFile(f.Name())
			require.NoError(t, err)
			c.complete = string(got) == "new"
		}
		calls = append(calls, c)
		return f.Sync()
	}
	require.NoError(t, saveFile(dir, "s.json", []byte("old"), rec))
	calls = nil
	require.NoError(t, saveFile(dir, "s.json", []byte("new"), rec))
	require.Len(t, calls, 2, "%+v", calls)
	assert.Equal(t, syncCall{name: calls[0].name, complete: true}, calls[0], "first the temporary file, whole, before the rename")
	assert.Equal(t, syncCall{name: dir, dir: true, renamed: true}, calls[1], "then the directory, after the rename")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "new", string(b))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left")
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
}

// StateDirProblem names a state directory or file others may write to.
func TestStateDirProblem(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o700))
	assert.Empty(t, StateDirProblem(dir, "s.json"), "private, no file yet")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s.json"), nil, 0o600))
	assert.Empty(t, StateDirProblem(dir, "s.json"))
	require.NoError(t, os.Chmod(filepath.Join(dir, "s.json"), 0o666))
	p := StateDirProblem(dir, "s.json")
	assert.Contains(t, p, filepath.Join(dir, "s.json"))
	assert.NotContains(t, strings.ReplaceAll(p, filepath.Join(dir, "s.json"), ""), dir, "the directory itself is fine")
	require.NoError(t, os.Chmod(dir, 0o770))
	assert.Contains(t, StateDirProblem(dir, "s.json"), dir+" is writable by users other than its owner (mode -rwxrwx---)")
	assert.Empty(t, StateDirProblem(filepath.Join(dir, "missing"), "s.json"))
}
