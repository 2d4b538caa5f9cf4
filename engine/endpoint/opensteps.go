package endpoint

import (
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"zrepl.dev/zrepl/engine/zfs"
)

// openSteps knows the sends of a Sender in flight and the versions each
// uses: its target and source, and the step bookmark made of its source.
// One call never lowers another call's protection: StepCompleted (of this
// or another client of a source) leaves the holds and bookmarks of a send
// in flight alone, a client's prune keeps its snapshots, and a Send that
// fails undoes only what no other send in flight uses.
//
// A send is in flight from before it takes its protection until its stream
// ended (read to the end, or closed). The protection of an interrupted
// step stays on ZFS after that, as it always did, until a later
// StepCompleted of the job on the filesystem.
type openSteps struct {
	mu  sync.Mutex
	fss map[zfs.DatasetPath]*fsSteps
	// seq numbers the sender's own changes to its filesystems, so that a
	// listing that ran while one was made is not remembered as current.
	seq atomic.Uint64
}

// fsSteps is one filesystem's sends in flight. mu is held while a call
// takes, checks or gives up protection of the filesystem, so that a check
// and the zfs calls it decides stay one step for the others.
type fsSteps struct {
	mu sync.Mutex
	// uses counts the sends in flight that use a version, by RelName.
	uses map[string]int

	// What the sender knows of the filesystem's versions without asking
	// zfs (see listed.go): known says versions is the last listing, kept
	// current by the sender's own holds, releases, bookmarks and destroys
	// since; changed is the seq of the last such change.
	known    bool
	versions []zfs.FilesystemVersion
	changed  uint64
	// stepHeld are the snapshots (name to GUID) this sender put its step
	// hold on, or found it on, right after its send checked their GUIDs,
	// and has not released since: protected from destruction, a snapshot
	// there is still the one the send checked.
	stepHeld map[string]uint64
	// listed and sizes are the last listing's versions and their sizes,
	// as listed: what size estimates come from.
	listed []zfs.FilesystemVersion
	sizes  []zfs.VersionSize
}

// of returns fs's entry; entries stay, one per filesystem a sender sent.
func (o *openSteps) of(fs zfs.DatasetPath) *fsSteps {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fss == nil {
		o.fss = map[zfs.DatasetPath]*fsSteps{}
	}
	e := o.fss[fs]
	if e == nil {
		e = &fsSteps{uses: map[string]int{}, stepHeld: map[string]uint64{}}
		o.fss[fs] = e
	}
	return e
}

// all returns every filesystem's entry.
func (o *openSteps) all() map[zfs.DatasetPath]*fsSteps {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.fss)
}

// change records that the sender changed the filesystem's versions; with
// forget, what it knows of them is dropped (ask zfs). The caller holds
// e.mu.
func (o *openSteps) change(e *fsSteps, forget bool) {
	e.changed = o.seq.Add(1)
	if forget {
		e.known, e.versions = false, nil
	}
}

// edit changes the known versions (a copy: the listing's slice may be
// shared) by f; the caller holds e.mu.
func (o *openSteps) edit(e *fsSteps, f func([]zfs.FilesystemVersion) []zfs.FilesystemVersion) {
	o.change(e, false)
	if e.known {
		e.versions = f(slices.Clone(e.versions))
	}
}

// add and remove count uses of versions; the caller holds e.mu.
func (e *fsSteps) add(rels []string) {
	for _, r := range rels {
		e.uses[r]++
	}
}

func (e *fsSteps) remove(rels []string) {
	for _, r := range rels {
		if e.uses[r]--; e.uses[r] <= 0 {
			delete(e.uses, r)
		}
	}
}

// inUse reports whether a send in flight uses the version; the caller
// holds e.mu.
func (e *fsSteps) inUse(rel string) bool { return e.uses[rel] > 0 }

// stepStream is a send stream that ends its step's time in flight when it
// is read to the end or closed, whichever comes first. It passes zfsreal's
// splice through (Unwrap, Passed: it neither changes nor counts bytes);
// a spliced stream ends its time in flight at Close.
type stepStream struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (s *stepStream) end() { s.once.Do(s.done) }

func (s *stepStream) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	if err == io.EOF {
		s.end()
	}
	return n, err
}

func (s *stepStream) Close() error {
	err := s.ReadCloser.Close()
	s.end()
	return err
}

func (s *stepStream) Unwrap() io.Reader { return s.ReadCloser }

func (s *stepStream) Passed(int64) {}
