package endpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"zrepl.dev/zrepl/engine/zfs"
)

// Batch is the bookkeeping of a run's completed steps that can wait for
// the end of the run (issue 13: a zfs process per step adds up over
// hundreds of filesystems): the sender's release of the step holds that a
// completed step no longer needs, and the receiver's last-received hold on
// what it received with the release of that hold from what it held
// before. Finish does it for every filesystem at once, in one zfs release
// per sender and one zfs hold and one zfs release per receiver.
//
// Nothing is unprotected meanwhile: the held snapshots stay held a little
// longer, and the receiver's older snapshot keeps its last-received hold
// until the new one has it. A run that ends without Finish (a crash) leaves
// holds the next run's plan finds and moves or releases, as after a crash
// between a step's zfs calls.
//
// A Batch travels in the context of the calls that use it (WithBatch), so
// that a wrapper of an endpoint passes it on by passing its ctx, and a
// remote endpoint never sees it. A Batch is one run's; its methods may be
// called concurrently.
type Batch struct {
	mu sync.Mutex
	// finished: Finish ran; later calls do their bookkeeping at once.
	finished bool
	releases map[*Sender]map[zfs.DatasetPath][]zfs.VersionRef
	holds    map[*Receiver]map[zfs.DatasetPath]*pendingHold
}

type batchKey struct{}

// WithBatch returns ctx carrying b: Sender.StepCompleted and
// Receiver.Receive called with it put their bookkeeping off to b.
func WithBatch(ctx context.Context, b *Batch) context.Context {
	return context.WithValue(ctx, batchKey{}, b)
}

// batchOf is the Batch ctx carries, nil if none.
func batchOf(ctx context.Context) *Batch {
	b, _ := ctx.Value(batchKey{}).(*Batch)
	return b
}

// pendingHold is a receiver filesystem's last-received hold put off: to
// gets it, release loses it; fs is the filesystem as the step named it.
type pendingHold struct {
	fs      string
	to      zfs.FilesystemVersion
	release []string
}

// releaseLater puts off the release of s's step holds on snaps of fs,
// unless the batch is finished (false: release them now).
func (b *Batch) releaseLater(s *Sender, fs zfs.DatasetPath, snaps []zfs.VersionRef) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return false
	}
	if b.releases == nil {
		b.releases = map[*Sender]map[zfs.DatasetPath][]zfs.VersionRef{}
	}
	m := b.releases[s]
	if m == nil {
		m = map[zfs.DatasetPath][]zfs.VersionRef{}
		b.releases[s] = m
	}
	for _, r := range snaps {
		if !slices.Contains(m[fs], r) {
			m[fs] = append(m[fs], r)
		}
	}
	return true
}

// keepHeld drops from the releases put off for s on fs those of snaps:
// a Send of the run took their step holds again after an earlier step
// put their release off, and its step, done or not, needs them (a step
// that completes puts off its own releases).
func (b *Batch) keepHeld(s *Sender, fs zfs.DatasetPath, snaps []zfs.VersionRef) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.releases[s]
	if m == nil || len(m[fs]) == 0 {
		return
	}
	m[fs] = slices.DeleteFunc(m[fs], func(r zfs.VersionRef) bool { return slices.Contains(snaps, r) })
	if len(m[fs]) == 0 {
		delete(m, fs)
	}
}

// holdLater puts off r's last-received hold on target@to and its release
// from held; a later step of target in the run takes the place of an
// earlier one, whose snapshot was never held. Once the batch is finished
// it puts off nothing (false: hold and release now).
func (b *Batch) holdLater(r *Receiver, fs string, target zfs.DatasetPath, to zfs.FilesystemVersion, held []string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return false
	}
	if b.holds == nil {
		b.holds = map[*Receiver]map[zfs.DatasetPath]*pendingHold{}
	}
	m := b.holds[r]
	if m == nil {
		m = map[zfs.DatasetPath]*pendingHold{}
		b.holds[r] = m
	}
	p := m[target]
	if p == nil {
		p = &pendingHold{}
		m[target] = p
	}
	p.fs, p.to = fs, to
	for _, h := range held {
		if !slices.Contains(p.release, h) {
			p.release = append(p.release, h)
		}
	}
	p.release = slices.DeleteFunc(p.release, func(h string) bool { return h == to.Name })
	return true
}

// Finish does what the batch put off: first the receivers' holds and
// releases, then the senders' releases. A receiver whose hold failed
// releases nothing (its older snapshots stay held). It returns what
// failed by filesystem, named as the steps named it (SendRequest.FS,
// ReceiveRequest.FS): every filesystem of a zfs call that failed. Finish
// empties the batch, whatever it returns; a call that comes with the
// batch after it (a wrapper's late call) does its bookkeeping at once.
// Finish again does nothing.
func (b *Batch) Finish(ctx context.Context) map[string]error {
	b.mu.Lock()
	releases, holds := b.releases, b.holds
	b.releases, b.holds = nil, nil
	b.finished = true
	b.mu.Unlock()
	var failed map[string]error
	fail := func(fs string, err error) {
		if failed == nil {
			failed = map[string]error{}
		}
		failed[fs] = errors.Join(failed[fs], err)
	}
	for _, r := range sortedKeys(holds, func(r *Receiver) string { return r.Root.String() + "\x00" + r.Job.String() }) {
		if err := r.finishHolds(ctx, holds[r]); err != nil {
			for _, p := range holds[r] {
				fail(p.fs, err)
			}
		}
	}
	for _, s := range sortedKeys(releases, func(s *Sender) string { return s.Job.String() }) {
		if err := s.finishReleases(ctx, releases[s]); err != nil {
			for fs := range releases[s] {
				fail(fs.String(), err)
			}
		}
	}
	return failed
}

func sortedKeys[K comparable, V any](m map[K]V, name func(K) string) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortStableFunc(keys, func(a, b K) int { return strings.Compare(name(a), name(b)) })
	return keys
}

func sortedPaths[V any](m map[zfs.DatasetPath]V) []zfs.DatasetPath {
	return sortedKeys(m, zfs.DatasetPath.String)
}

// finishHolds takes the put-off last-received holds in one zfs hold, then
// releases the older ones in one zfs release.
func (r *Receiver) finishHolds(ctx context.Context, pending map[zfs.DatasetPath]*pendingHold) error {
	tag := LastReceivedHoldTag(r.Job)
	var tos, older []zfs.VersionRef
	for _, target := range sortedPaths(pending) {
		p := pending[target]
		tos = append(tos, p.to.Ref(target))
		for _, name := range p.release {
			older = append(older, zfs.SnapshotRef(target, name))
		}
	}
	if err := dropKinds(r.ZFS.HoldAll(ctx, tag, tos), zfs.ErrHoldTagExists); err != nil {
		r.listed.forget()
		return fmt.Errorf("last-received holds: %w", err)
	}
	if err := releaseAllTagFrom(ctx, r.ZFS, older, tag); err != nil {
		r.listed.forget()
		return err
	}
	for target, p := range pending {
		r.listed.update(target, received{held: []string{p.to.Name}})
	}
	return nil
}

// finishReleases releases the put-off step holds that no send in flight
// uses, in one zfs release. It holds the filesystems' locks (in order of
// name) across the call, so no Send takes a hold there meanwhile that the
// release would take away.
func (s *Sender) finishReleases(ctx context.Context, pending map[zfs.DatasetPath][]zfs.VersionRef) error {
	fss := sortedPaths(pending)
	entries := make([]*fsSteps, len(fss))
	var release []zfs.VersionRef
	for i, fs := range fss {
		e := s.steps.of(fs)
		e.mu.Lock()
		defer e.mu.Unlock()
		entries[i] = e
		for _, r := range pending[fs] {
			if !e.inUse(r.Kind.Delimiter() + r.Name) {
				release = append(release, r)
			}
		}
	}
	err := releaseAllTagFrom(ctx, s.ZFS, release, StepHoldTag(s.Job))
	released := map[zfs.DatasetPath]map[string]bool{}
	for _, r := range release {
		if released[r.FS] == nil {
			released[r.FS] = map[string]bool{}
		}
		released[r.FS][r.Name] = true
	}
	for i, fs := range fss {
		e := entries[i]
		if err != nil {
			s.steps.change(e, true)
			continue
		}
		for name := range released[fs] {
			delete(e.stepHeld, name)
		}
		s.steps.edit(e, func(vs []zfs.FilesystemVersion) []zfs.FilesystemVersion {
			for i := range vs {
				if vs[i].Kind == zfs.Snapshot && released[fs][vs[i].Name] {
					vs[i].UserRefs = 0
				}
			}
			return vs
		})
	}
	return err
}

// releaseAllTagFrom is releaseTagFrom for snapshots of several
// filesystems (one zfs release takes them all).
func releaseAllTagFrom(ctx context.Context, z zfs.ZFS, snaps []zfs.VersionRef, tag string) error {
	if len(snaps) == 0 {
		return nil
	}
	err := dropKinds(z.ReleaseAll(ctx, tag, snaps), zfs.ErrHoldTagNotFound, zfs.ErrDatasetNotExist)
	if err != nil {
		return fmt.Errorf("release %s: %w", tag, err)
	}
	return nil
}
