package snapper

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// Naming is how a job names its snapshots, as zrepl does: Prefix, then the
// time of the snapshot in Format at Location.
//
// Format is one of zrepl's names, matched in any case: dense
// (20060102_150405_000, the default; its _000 is literal), human
// (2006-01-02_15:04:05), iso-8601 (2006-01-02T15:04:05.000Z0700) and
// unix-seconds; anything else is a Go time layout. dense, human and
// unix-seconds need Location UTC: they carry no zone, so names would
// repeat or go backwards when the clock changes. ZFS names may not
// contain '+', so the '+' of a positive zone offset is written '_', and a
// format may not contain '+' itself.
type Naming struct {
	Prefix string
	Format string
	// Location is where the time is written; nil is UTC.
	Location *time.Location
}

// Named formats.
const (
	FormatDense       = "dense"
	FormatHuman       = "human"
	FormatISO8601     = "iso-8601"
	FormatUnixSeconds = "unix-seconds"
)

// ErrFormatNeedsUTC is matched by NewNaming's error for a format that
// carries no zone with a Location other than UTC.
var ErrFormatNeedsUTC = fmt.Errorf("the format carries no time zone, so it needs timestamp_location UTC")

// NewNaming checks a naming and returns it. Like zrepl it tries two dates
// (June and December, which differ in daylight saving time in most
// places) and refuses a naming that would give an invalid snapshot name.
func NewNaming(prefix, format string, loc *time.Location) (Naming, error) {
	if loc == nil {
		loc = time.UTC
	}
	n := Naming{Prefix: prefix, Format: format, Location: loc}
	switch strings.ToLower(format) {
	case FormatDense, FormatHuman, FormatUnixSeconds, "":
		if loc != time.UTC {
			return Naming{}, ErrFormatNeedsUTC
		}
	case FormatISO8601:
	default:
		if strings.Contains(format, "+") {
			return Naming{}, fmt.Errorf("timestamp format %q contains '+', which ZFS names may not (a positive zone offset's '+' is written '_')", format)
		}
	}
	for _, t := range []time.Time{time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(2020, 12, 1, 0, 0, 0, 0, time.UTC)} {
		name := n.Name(t)
		if err := zfs.ValidateVersionName(zfs.Snapshot, name); err != nil {
			return Naming{}, fmt.Errorf("snapshot names would be invalid: %w", err)
		}
	}
	return n, nil
}

// Name is the name of a snapshot taken at t.
func (n Naming) Name(t time.Time) string {
	loc := n.Location
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	var ts string
	switch strings.ToLower(n.Format) {
	case FormatDense, "":
		ts = t.Format("20060102_150405_000")
	case FormatHuman:
		ts = t.Format("2006-01-02_15:04:05")
	case FormatISO8601:
		ts = t.Format("2006-01-02T15:04:05.000Z0700")
	case FormatUnixSeconds:
		ts = strconv.FormatInt(t.Unix(), 10)
	default:
		ts = t.Format(n.Format)
	}
	// The format has no '+' (NewNaming), so a '+' is the zone offset's.
	return n.Prefix + strings.Replace(ts, "+", "_", 1)
}
