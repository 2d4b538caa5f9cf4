package zfsreal

import (
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
)

// maxPropValueLen is ZAP_MAXVALUELEN, the longest user property value.
const maxPropValueLen = 8192

// badInput is the error for an argument refused before any command runs.
func badInput(op, dataset string, err error) error {
	return &zfs.Error{Kind: zfs.ErrInvalidName, Op: op, Dataset: dataset, Err: err}
}

func checkFS(op string, fs zfs.DatasetPath) error {
	if fs.IsZero() {
		return badInput(op, "", errors.New("no dataset given"))
	}
	// A DatasetPath can only be made valid, but re-checking is cheap and
	// keeps this package safe against any future way around that.
	if err := zfs.ValidateDatasetPath(fs.String()); err != nil {
		return badInput(op, fs.String(), err)
	}
	return nil
}

// checkRef validates r and that it is one of the kinds allowed.
func checkRef(op string, r zfs.VersionRef, kinds ...zfs.VersionKind) error {
	if r.FS.IsZero() {
		return badInput(op, r.String(), errors.New("version has no filesystem"))
	}
	if err := r.Validate(); err != nil {
		return badInput(op, r.String(), err)
	}
	for _, k := range kinds {
		if r.Kind == k {
			return nil
		}
	}
	return badInput(op, r.String(), fmt.Errorf("%s is a %s, want a %s", r, r.Kind, kinds[0]))
}

// checkSameFS checks every ref names fs.
func checkSameFS(op string, fs zfs.DatasetPath, refs []zfs.VersionRef) error {
	for _, r := range refs {
		if r.FS != fs {
			return badInput(op, r.String(), fmt.Errorf("%s is not on %s: all versions must belong to one filesystem", r, fs))
		}
	}
	return nil
}

// checkPropName checks a property name for zfs set/inherit and recv -o/-x:
// lower-case letters, digits and "-_.:", not starting with '-' (zfs would
// read an option). With user, it must be a user property ("module:name").
func checkPropName(name string, user bool) error {
	if name == "" {
		return errors.New("empty property name")
	}
	if len(name) >= zfs.MaxNameLen {
		return fmt.Errorf("property name %q is %d bytes, the limit is %d", name, len(name), zfs.MaxNameLen-1)
	}
	if name[0] == '-' {
		return fmt.Errorf("property name %q starts with '-'", name)
	}
	colon := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		case c == ':':
			colon = true
		default:
			return fmt.Errorf("property name %q: invalid character %q at position %d", name, c, i)
		}
	}
	if user && !colon {
		return fmt.Errorf("%q is not a user property (no ':')", name)
	}
	return nil
}

// checkPropValue refuses values zfs cannot store or that would break the
// tab- and line-separated listings this package reads back.
func checkPropValue(name, value string) error {
	if len(value) >= maxPropValueLen {
		return fmt.Errorf("value of %s is %d bytes, the limit is %d", name, len(value), maxPropValueLen-1)
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("value of %s: control byte 0x%02x at position %d", name, c, i)
		}
	}
	return nil
}
