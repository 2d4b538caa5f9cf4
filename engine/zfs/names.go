package zfs

import (
	"fmt"
	"strings"
)

// MaxNameLen is ZFS_MAX_DATASET_NAME_LEN: a full name (pool/fs@snap) must be
// shorter than this, as must each component and a hold tag.
const MaxNameLen = 256

// NameError says why a name is not a valid ZFS name.
type NameError struct {
	Name   string
	What   string // "dataset", "snapshot name", "bookmark name", "hold tag"
	Reason string
	// Pos is the byte offset of the offending character, or -1.
	Pos int
}

func (e *NameError) Error() string {
	if e.Pos >= 0 {
		return fmt.Sprintf("invalid %s %q: %s at position %d", e.What, e.Name, e.Reason, e.Pos)
	}
	return fmt.Sprintf("invalid %s %q: %s", e.What, e.Name, e.Reason)
}

// Is makes every *NameError match ErrInvalidName.
func (e *NameError) Is(target error) bool { return target == ErrInvalidName }

// ValidNameChar reports whether c may appear in a ZFS name component.
func ValidNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == ':' || c == ' '
}

func describeChar(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("invalid character %q", c)
	}
	return fmt.Sprintf("invalid byte 0x%02x", c)
}

// checkComponent validates one component of a name: a path element or a
// snapshot/bookmark name. off is the component's offset within the whole
// name, for error positions.
func checkComponent(name, what, comp string, off int) error {
	if comp == "" {
		return &NameError{Name: name, What: what, Reason: "empty component", Pos: off}
	}
	for i := 0; i < len(comp); i++ {
		c := comp[i]
		if !ValidNameChar(c) {
			return &NameError{Name: name, What: what, Reason: describeChar(c), Pos: off + i}
		}
	}
	if comp == "." {
		return &NameError{Name: name, What: what, Reason: "component is '.'", Pos: off}
	}
	if comp == ".." {
		return &NameError{Name: name, What: what, Reason: "component is '..'", Pos: off}
	}
	return nil
}

var reservedPoolPrefixes = []string{"mirror", "raidz", "draid", "spare", "log"}

func checkPoolName(name, what, pool string) error {
	if err := checkComponent(name, what, pool, 0); err != nil {
		return err
	}
	c := pool[0]
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
		return &NameError{Name: name, What: what, Reason: "pool name must begin with a letter", Pos: 0}
	}
	for _, p := range reservedPoolPrefixes {
		if strings.HasPrefix(pool, p) {
			return &NameError{Name: name, What: what, Reason: fmt.Sprintf("pool name %q is reserved", pool), Pos: 0}
		}
	}
	if len(pool) >= 2 && pool[0] == 'c' && pool[1] >= '0' && pool[1] <= '9' {
		return &NameError{Name: name, What: what, Reason: fmt.Sprintf("pool name %q is reserved (looks like a device)", pool), Pos: 0}
	}
	return nil
}

// ValidateDatasetPath checks a filesystem or volume name ("pool/a/b") the
// way OpenZFS's entity_namecheck does, without any '@' or '#' part.
func ValidateDatasetPath(s string) error {
	const what = "dataset"
	if s == "" {
		return &NameError{Name: s, What: what, Reason: "empty name", Pos: -1}
	}
	if len(s) >= MaxNameLen {
		return &NameError{Name: s, What: what, Reason: fmt.Sprintf("name is %d bytes, the limit is %d", len(s), MaxNameLen-1), Pos: -1}
	}
	if s[0] == '/' {
		return &NameError{Name: s, What: what, Reason: "leading slash", Pos: 0}
	}
	if s[len(s)-1] == '/' {
		return &NameError{Name: s, What: what, Reason: "trailing slash", Pos: len(s) - 1}
	}
	for i := 0; i < len(s); i++ { // not strings.IndexAny: it showed in profiles
		if s[i] == '@' || s[i] == '#' {
			return &NameError{Name: s, What: what, Reason: fmt.Sprintf("unexpected %q in a dataset path", s[i]), Pos: i}
		}
	}
	// Component by component without splitting: every listing and model
	// call validates names, and a slice per call showed in profiles.
	for off, first := 0, true; ; first = false {
		comp := s[off:]
		end := strings.IndexByte(comp, '/')
		if end >= 0 {
			comp = comp[:end]
		}
		var err error
		if first {
			err = checkPoolName(s, what, comp)
		} else {
			err = checkComponent(s, what, comp, off)
		}
		if err != nil {
			return err
		}
		if end < 0 {
			return nil
		}
		off += end + 1
	}
}

// ValidateVersionName checks the part after '@' or '#'.
func ValidateVersionName(kind VersionKind, name string) error {
	if kind != Snapshot && kind != Bookmark {
		return &NameError{Name: name, What: "version name", Reason: "unknown version kind", Pos: -1}
	}
	err := checkVersionName(name)
	if err != nil {
		// The label is built only on failure: validation runs for every
		// listed version and must not allocate on the good path.
		err.What = kind.String() + " name"
		return err
	}
	return nil
}

func checkVersionName(name string) *NameError {
	if len(name) >= MaxNameLen {
		return &NameError{Name: name, Reason: fmt.Sprintf("name is %d bytes, the limit is %d", len(name), MaxNameLen-1), Pos: -1}
	}
	if i := strings.IndexAny(name, "@#/"); i >= 0 {
		return &NameError{Name: name, Reason: fmt.Sprintf("unexpected %q", name[i]), Pos: i}
	}
	if err := checkComponent(name, "", name, 0); err != nil {
		return err.(*NameError)
	}
	return nil
}

// ValidateHoldTag checks a user hold tag: non-empty, shorter than
// MaxNameLen, printable.
func ValidateHoldTag(tag string) error {
	const what = "hold tag"
	if tag == "" {
		return &NameError{Name: tag, What: what, Reason: "empty tag", Pos: -1}
	}
	if len(tag) >= MaxNameLen {
		return &NameError{Name: tag, What: what, Reason: fmt.Sprintf("tag is %d bytes, the limit is %d", len(tag), MaxNameLen-1), Pos: -1}
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; c < 0x20 || c == 0x7f {
			return &NameError{Name: tag, What: what, Reason: describeChar(c), Pos: i}
		}
	}
	return nil
}

// DatasetPath is a validated filesystem name. The zero value is invalid and
// only means "no dataset".
type DatasetPath struct{ s string }

// NewDatasetPath validates s.
func NewDatasetPath(s string) (DatasetPath, error) {
	if err := ValidateDatasetPath(s); err != nil {
		return DatasetPath{}, err
	}
	return DatasetPath{s}, nil
}

// MustDatasetPath is NewDatasetPath for literals in tests and examples.
func MustDatasetPath(s string) DatasetPath {
	p, err := NewDatasetPath(s)
	if err != nil {
		panic(err)
	}
	return p
}

func (p DatasetPath) String() string { return p.s }

// IsZero reports whether p is the zero value.
func (p DatasetPath) IsZero() bool { return p.s == "" }

// Pool is the first component.
func (p DatasetPath) Pool() string {
	pool, _, _ := strings.Cut(p.s, "/")
	return pool
}

// Depth is the number of components below the pool (a pool has depth 0).
func (p DatasetPath) Depth() int { return strings.Count(p.s, "/") }

// Parent is the path one level up; ok is false for a pool.
func (p DatasetPath) Parent() (parent DatasetPath, ok bool) {
	i := strings.LastIndexByte(p.s, '/')
	if i < 0 {
		return DatasetPath{}, false
	}
	return DatasetPath{p.s[:i]}, true
}

// Child appends name as one new component.
func (p DatasetPath) Child(name string) (DatasetPath, error) {
	return NewDatasetPath(p.s + "/" + name)
}

// HasPrefix reports whether p is prefix or below it.
func (p DatasetPath) HasPrefix(prefix DatasetPath) bool {
	return p.s == prefix.s || strings.HasPrefix(p.s, prefix.s+"/")
}

// TrimPrefix is p relative to prefix ("a/b" for pool/x/a/b and pool/x); ok
// is false if p is not strictly below prefix.
func (p DatasetPath) TrimPrefix(prefix DatasetPath) (rel string, ok bool) {
	if !strings.HasPrefix(p.s, prefix.s+"/") {
		return "", false
	}
	return p.s[len(prefix.s)+1:], true
}

// Join appends a relative path ("a/b") to p.
func (p DatasetPath) Join(rel string) (DatasetPath, error) {
	if rel == "" {
		return p, nil
	}
	return NewDatasetPath(p.s + "/" + rel)
}

// MarshalText and UnmarshalText let paths appear in configs and JSON.
func (p DatasetPath) MarshalText() ([]byte, error) { return []byte(p.s), nil }

func (p *DatasetPath) UnmarshalText(b []byte) error {
	q, err := NewDatasetPath(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParseVersionRef parses "pool/fs@snap" or "pool/fs#bookmark".
func ParseVersionRef(s string) (VersionRef, error) {
	i := strings.IndexAny(s, "@#")
	if i < 0 {
		return VersionRef{}, &NameError{Name: s, What: "snapshot or bookmark", Reason: "no '@' or '#'", Pos: -1}
	}
	if len(s) >= MaxNameLen {
		return VersionRef{}, &NameError{Name: s, What: "snapshot or bookmark", Reason: fmt.Sprintf("name is %d bytes, the limit is %d", len(s), MaxNameLen-1), Pos: -1}
	}
	fs, err := NewDatasetPath(s[:i])
	if err != nil {
		return VersionRef{}, err
	}
	kind := Snapshot
	if s[i] == '#' {
		kind = Bookmark
	}
	if i == len(s)-1 {
		return VersionRef{}, &NameError{Name: s, What: kind.String(), Reason: fmt.Sprintf("empty %s name after %q", kind, s[i]), Pos: i}
	}
	if err := ValidateVersionName(kind, s[i+1:]); err != nil {
		var ne *NameError
		if asNameError(err, &ne) && ne.Pos >= 0 {
			ne.Pos += i + 1
			ne.Name = s
		}
		return VersionRef{}, err
	}
	return VersionRef{FS: fs, Kind: kind, Name: s[i+1:]}, nil
}

func asNameError(err error, target **NameError) bool {
	ne, ok := err.(*NameError)
	if ok {
		*target = ne
	}
	return ok
}
