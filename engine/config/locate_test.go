package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFindFile: without --config the first default location that exists
// is the config, /usr/local/etc/zrepl/zrepl.yml after /etc/zrepl/zrepl.yml.
func TestFindFile(t *testing.T) {
	assert.Equal(t, []string{"/etc/zrepl/zrepl.yml", "/usr/local/etc/zrepl/zrepl.yml"}, DefaultLocations)
	dir := t.TempDir()
	etc, local := filepath.Join(dir, "etc/zrepl.yml"), filepath.Join(dir, "local/zrepl.yml")
	locs := []string{etc, local}

	got, err := FindFile("given.yml", locs)
	require.NoError(t, err)
	assert.Equal(t, "given.yml", got, "--config wins, existing or not")

	_, err = FindFile("", locs)
	assert.EqualError(t, err, "no config file: none of "+etc+", "+local+" exists (want one of them, or --config FILE)")

	require.NoError(t, os.MkdirAll(filepath.Dir(local), 0o755))
	require.NoError(t, os.WriteFile(local, nil, 0o644))
	got, err = FindFile("", locs)
	require.NoError(t, err)
	assert.Equal(t, local, got, "the second location when the first is absent")

	require.NoError(t, os.MkdirAll(etc, 0o755))
	_, err = FindFile("", locs)
	assert.EqualError(t, err, "config file at default location "+etc+" is not a regular file")

	require.NoError(t, os.Remove(etc))
	require.NoError(t, os.WriteFile(etc, nil, 0o644))
	got, err = FindFile("", locs)
	require.NoError(t, err)
	assert.Equal(t, etc, got, "the first location first")
}
