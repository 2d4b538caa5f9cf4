package snapper

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

func TestNamingFormats(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.UTC)
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	require.NoError(t, err)
	for _, c := range []struct {
		format string
		loc    *time.Location
		want   string
	}{
		{"dense", nil, "z_20240506_070809_000"},
		{"DENSE", nil, "z_20240506_070809_000"},
		{"", nil, "z_20240506_070809_000"},
		{"human", nil, "z_2024-05-06_07:08:09"},
		{"unix-seconds", nil, "z_1714979289"},
		// zrepl's iso-8601 layout: milliseconds, Z for UTC, the offset
		// without a colon, its '+' written '_'.
		{"iso-8601", nil, "z_2024-05-06T07:08:09.123Z"},
		{"iso-8601", berlin, "z_2024-05-06T09:08:09.123_0200"},
		{"iso-8601", ny, "z_2024-05-06T03:08:09.123-0400"},
		{"iso-8601", kolkata, "z_2024-05-06T12:38:09.123_0530"},
		{"2006-01-02_15:04", berlin, "z_2024-05-06_09:08"},
		{"2006-01-02_15:04Z07", berlin, "z_2024-05-06_09:08_02"},
	} {
		n, err := NewNaming("z_", c.format, c.loc)
		require.NoError(t, err, c.format)
		assert.Equal(t, c.want, n.Name(at), "%s in %v", c.format, c.loc)
	}
}

func TestNamingRefusals(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	for _, f := range []string{"dense", "human", "unix-seconds"} {
		_, err := NewNaming("z_", f, berlin)
		assert.True(t, errors.Is(err, ErrFormatNeedsUTC), f)
	}
	_, err = NewNaming("z_", "2006+01", nil)
	assert.ErrorContains(t, err, "contains '+'")
	_, err = NewNaming("z_", "2006/01", nil)
	assert.ErrorContains(t, err, `invalid snapshot name "z_2020/06"`)
	_, err = NewNaming("bad@prefix", "dense", nil)
	assert.ErrorContains(t, err, "invalid snapshot name")
}

// In every time zone of the system's database, iso-8601 names are valid
// ZFS snapshot names and read back to the instant they were taken at, in
// summer and winter.
func TestISO8601NamesInEveryZone(t *testing.T) {
	zones := systemZones(t)
	instants := []time.Time{
		time.Date(2024, 1, 15, 12, 0, 0, 250_000_000, time.UTC),
		time.Date(2024, 7, 15, 23, 59, 59, 999_000_000, time.UTC),
	}
	for _, name := range zones {
		loc, err := time.LoadLocation(name)
		if err != nil {
			continue
		}
		n, err := NewNaming("zrepl_", FormatISO8601, loc)
		require.NoError(t, err, name)
		for _, at := range instants {
			s := n.Name(at)
			require.NoError(t, zfs.ValidateVersionName(zfs.Snapshot, s), name)
			ts := strings.Replace(strings.TrimPrefix(s, "zrepl_"), "_", "+", 1)
			back, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
			require.NoError(t, err, "%s: %s", name, s)
			assert.True(t, back.Equal(at), "%s: %s reads back as %s", name, s, back)
		}
	}
}

func systemZones(t *testing.T) []string {
	root := "/usr/share/zoneinfo"
	var out []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if strings.Contains(rel, ".") || strings.HasPrefix(rel, "posix") || strings.HasPrefix(rel, "right") {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if len(out) == 0 {
		// time/tzdata is compiled in (the config package imports it);
		// a few zones stand in for the database.
		out = []string{"UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham", "Australia/Lord_Howe"}
	}
	return out
}
