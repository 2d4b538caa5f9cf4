package zfsrealtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return dir
}

func TestHashTree(t *testing.T) {
	sum := func(files map[string]string) string {
		h, err := hashTree(writeTree(t, files))
		require.NoError(t, err)
		return h
	}
	base := sum(map[string]string{"data": "abc", "d/x": "y"})
	assert.Equal(t, base, sum(map[string]string{"d/x": "y", "data": "abc"}), "same tree, same sum")
	assert.Equal(t, base, sum(map[string]string{"data": "abc", "d/x": "y", ".zfs/snapshot/s/data": "other"}),
		"the .zfs directory is not content")
	assert.NotEqual(t, base, sum(map[string]string{"data": "abd", "d/x": "y"}), "content changed")
	assert.NotEqual(t, base, sum(map[string]string{"data2": "abc", "d/x": "y"}), "name changed")
	// Moving bytes between files changes the sum: names are hashed with
	// their content, separated.
	assert.NotEqual(t, sum(map[string]string{"a": "bc"}), sum(map[string]string{"ab": "c"}))
}

func TestUsableSaysWhy(t *testing.T) {
	why := Usable()
	if _, err := os.Stat("/dev/zfs"); err != nil {
		assert.Contains(t, why, "no /dev/zfs")
	}
	if os.Geteuid() != 0 {
		assert.Contains(t, why, "not root")
	}
}
