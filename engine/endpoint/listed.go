package endpoint

import (
	"slices"
	"sync"

	"zrepl.dev/zrepl/engine/zfs"
)

// An attempt lists each side once, then runs its steps. What a step needs
// to know of its filesystem beyond the versions it names (the sender: the
// filesystem's encryption, for the send policy; the receiver: whether the
// target and its parents exist, which snapshots may carry the job's
// last-received hold) was in that listing, and asking zfs again costs a
// process per question. The endpoints therefore remember their last
// listing and keep it current where their own steps change it. What they
// remember only spares questions whose stale answer ZFS itself refuses or
// which the step checks anyway: a send still names its versions by GUID,
// a receive that finds its target or a parent other than remembered
// fails, and any failure forgets (the next attempt lists afresh).

// sentInfos is what a Sender's last listing said of each filesystem.
type sentInfos struct {
	mu sync.Mutex
	m  map[zfs.DatasetPath]zfs.FilesystemInfo
}

func (c *sentInfos) set(m map[zfs.DatasetPath]zfs.FilesystemInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = m
}

func (c *sentInfos) get(fs zfs.DatasetPath) (zfs.FilesystemInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.m[fs]
	return i, ok
}

func (c *sentInfos) forget(fs zfs.DatasetPath) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, fs)
}

// received is what a Receiver knows of one dataset at or below its Root.
type received struct {
	placeholder bool
	// held are the snapshots (names) that may carry the job's
	// last-received hold: those with user holds in the listing, and those
	// the receiver held since.
	held []string
}

// receivedTree is a Receiver's last listing of Root, kept current by its
// steps. A nil map knows nothing (no listing yet, or forgotten).
type receivedTree struct {
	mu sync.Mutex
	m  map[zfs.DatasetPath]received
}

// set replaces what is known by a listing of Root (tree; empty where Root
// does not exist).
func (c *receivedTree) set(tree []zfs.Listing) {
	m := make(map[zfs.DatasetPath]received, len(tree))
	for _, l := range tree {
		var held []string
		for _, v := range l.Versions {
			if v.Kind == zfs.Snapshot && v.UserRefs > 0 {
				held = append(held, v.Name)
			}
		}
		m[l.Info.Path] = received{placeholder: l.Info.Placeholder, held: held}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = m
}

// lookup says whether ds exists and what is known of it; known is false
// when nothing is remembered.
func (c *receivedTree) lookup(ds zfs.DatasetPath) (r received, exists, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		return received{}, false, false
	}
	r, exists = c.m[ds]
	r.held = slices.Clone(r.held)
	return r, exists, true
}

// update records a change a step made to ds, if anything is remembered.
func (c *receivedTree) update(ds zfs.DatasetPath, r received) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m != nil {
		c.m[ds] = r
	}
}

// forget drops everything: a step failed, and what it met may not be what
// the listing said.
func (c *receivedTree) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}
