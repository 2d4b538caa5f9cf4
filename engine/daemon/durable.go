package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"zrepl.dev/zrepl/engine/zfs"
)

// Durable makes a backend whose state lives in memory (the model, saved to
// a file) as durable as a real pool: every call that changes the state
// returns only after the state was saved, so a daemon killed with SIGKILL
// keeps every change a caller saw succeed (a received snapshot, a cursor, a
// hold), as a real pool keeps what a returned zfs command wrote.
//
// Calls that change state at the same time share one save (a group
// commit, like a pool's transaction group), so concurrent steps do not
// queue one save each behind each other.
type Durable struct {
	zfs.ZFS
	c committer
}

// NewDurable wraps z; save writes z's whole state (atomically: a crash in
// the middle must leave the previous state).
func NewDurable(z zfs.ZFS, save func() error) *Durable {
	d := &Durable{ZFS: z}
	d.c.save = save
	d.c.cond = sync.NewCond(&d.c.mu)
	return d
}

// Saves is how many saves ran (for tests and benchmarks).
func (d *Durable) Saves() int64 {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	return d.c.saves
}

// committer runs saves so that each change is covered by a save that
// started after it.
type committer struct {
	save func() error

	mu     sync.Mutex
	cond   *sync.Cond
	seq    uint64 // changes so far
	saved  uint64 // changes covered by the last successful save
	saving bool
	saves  int64
}

// commit returns once a save started after the caller's change finished.
// The change was made before commit is called, so any save that reads seq
// after the increment below includes it.
func (c *committer) commit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	mine := c.seq
	for c.saved < mine {
		if c.saving {
			c.cond.Wait()
			continue
		}
		c.saving = true
		upto := c.seq
		c.mu.Unlock()
		err := c.save()
		c.mu.Lock()
		c.saving = false
		c.saves++
		c.cond.Broadcast()
		if err != nil {
			// The waiters try a save of their own: one failure need not
			// be theirs.
			return err
		}
		c.saved = max(c.saved, upto)
	}
	return nil
}

// after commits a change and joins a save failure to the call's result.
// A failed call commits too: a failed receive leaves partial state, a
// batch destroy may have destroyed some of its versions.
func (d *Durable) after(op, what string, err error) error {
	if serr := d.c.commit(); serr != nil {
		return errors.Join(err, fmt.Errorf("%s %s: the change is made but saving the backend state failed: %w", op, what, serr))
	}
	return err
}

func (d *Durable) CreatePlaceholder(ctx context.Context, fs zfs.DatasetPath, opts zfs.PlaceholderOptions) error {
	return d.after("create placeholder", fs.String(), d.ZFS.CreatePlaceholder(ctx, fs, opts))
}

func (d *Durable) SetUserProperty(ctx context.Context, fs zfs.DatasetPath, property, value string) error {
	return d.after("set "+property+" on", fs.String(), d.ZFS.SetUserProperty(ctx, fs, property, value))
}

func (d *Durable) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	return d.after("snapshot", fs.String()+"@"+name, d.ZFS.Snapshot(ctx, fs, name))
}

func (d *Durable) Bookmark(ctx context.Context, from zfs.VersionRef, bookmark string) error {
	return d.after("bookmark", from.FS.String()+"#"+bookmark, d.ZFS.Bookmark(ctx, from, bookmark))
}

func (d *Durable) Destroy(ctx context.Context, versions []zfs.VersionRef) error {
	if len(versions) == 0 {
		return d.ZFS.Destroy(ctx, versions)
	}
	return d.after("destroy", fmt.Sprintf("%d versions of %s", len(versions), versions[0].FS), d.ZFS.Destroy(ctx, versions))
}

func (d *Durable) Rollback(ctx context.Context, snapshot zfs.VersionRef, destroyNewer bool) error {
	return d.after("rollback to", snapshot.String(), d.ZFS.Rollback(ctx, snapshot, destroyNewer))
}

func (d *Durable) Hold(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	return d.after("hold", snapshot.String(), d.ZFS.Hold(ctx, snapshot, tag))
}

func (d *Durable) Release(ctx context.Context, snapshot zfs.VersionRef, tag string) error {
	return d.after("release", snapshot.String(), d.ZFS.Release(ctx, snapshot, tag))
}

func (d *Durable) HoldAll(ctx context.Context, tag string, snapshots []zfs.VersionRef) error {
	if len(snapshots) == 0 {
		return d.ZFS.HoldAll(ctx, tag, snapshots)
	}
	return d.after("hold", fmt.Sprintf("%d snapshots", len(snapshots)), d.ZFS.HoldAll(ctx, tag, snapshots))
}

func (d *Durable) ReleaseAll(ctx context.Context, tag string, snapshots []zfs.VersionRef) error {
	if len(snapshots) == 0 {
		return d.ZFS.ReleaseAll(ctx, tag, snapshots)
	}
	return d.after("release", fmt.Sprintf("%d snapshots", len(snapshots)), d.ZFS.ReleaseAll(ctx, tag, snapshots))
}

// Receive saves once the receive ended, received or partial: a receive
// cut off by a shutdown keeps its resume state.
func (d *Durable) Receive(ctx context.Context, fs zfs.DatasetPath, stream io.Reader, opts zfs.RecvOptions) error {
	return d.after("receive into", fs.String(), d.ZFS.Receive(ctx, fs, stream, opts))
}

// Checkpoint saves a change that a call still in flight made, such as the
// partial state a receive records while it runs (zfsmodel's OnCheckpoint),
// so that a kill after it returns keeps that state. It shares saves with
// other changes like any change. The caller must not hold the backend's
// lock, as the save reads the whole state; it may run inside a Receive of
// this Durable, which commits only after the receive returns.
func (d *Durable) Checkpoint() error {
	return d.c.commit()
}

func (d *Durable) AbortReceive(ctx context.Context, fs zfs.DatasetPath) error {
	return d.after("abort the receive into", fs.String(), d.ZFS.AbortReceive(ctx, fs))
}

var _ zfs.ZFS = (*Durable)(nil)

// SaveFile writes data to dir/name (creating dir, mode 0700) so that a
// crash or a power loss leaves either the previous content or the new one,
// whole: a temporary file, fsynced, renamed over the old one, then the
// directory fsynced. Without the last fsync the rename is not durable: a
// power loss may bring the previous state back, and with it, on the model
// backend, a past that other hosts have already moved on from.
func SaveFile(dir, name string, data []byte) error {
	return saveFile(dir, name, data, (*os.File).Sync)
}

// saveFile is SaveFile with the fsync given (a test records them).
func saveFile(dir, name string, data []byte, sync func(*os.File) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := sync(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := sync(d); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// StateDirProblem says what is unsafe about the permissions of a state
// directory and the state file in it, or "" if nothing is (a file or
// directory that does not exist yet is none). Whoever may write there may
// rewrite the backend's pools, snapshots and holds.
func StateDirProblem(dir, name string) string {
	var problems []string
	for _, p := range []string{dir, filepath.Join(dir, name)} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if m := fi.Mode().Perm(); m&0o022 != 0 {
			problems = append(problems, fmt.Sprintf("%s is writable by users other than its owner (mode %v)", p, m))
		}
	}
	return strings.Join(problems, "; ")
}
