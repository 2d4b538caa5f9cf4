// Package modelpair is the pair of model hosts most replication tests
// start from: a sending host and a receiving host, each a zfsmodel with one
// pool (src and dst), and one job's sender of the filesystems below
// src/data. Tests of the driver, the rpc protocol, the transports and the
// simulator's regressions share it instead of each setting it up anew; a
// test adds its filesystems, data, receivers and links.
package modelpair

import (
	"context"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Options shape a pair; the zero value is the usual one.
type Options struct {
	// Job is the job's name (default "job").
	Job string
	// Clock is both hosts' clock (nil: zfsmodel's deterministic default).
	Clock func() time.Time
}

// Pair is the two hosts and the job's sender.
type Pair struct {
	// Src is the sending host, seeded 1, with pool src; Dst the
	// receiving one, seeded 2, with pool dst.
	Src, Dst *zfsmodel.Model
	Job      endpoint.JobID
	// Sender lists below src and sends the filesystems below src/data
	// (src/data too).
	Sender *endpoint.Sender
}

// Data is where the sender's filesystems are.
var Data = zfs.MustDatasetPath("src/data")

// New makes a pair.
func New(o Options) (*Pair, error) {
	if o.Job == "" {
		o.Job = "job"
	}
	job, err := endpoint.NewJobID(o.Job)
	if err != nil {
		return nil, err
	}
	p := &Pair{
		Src: zfsmodel.New(zfsmodel.Options{Seed: 1, Clock: o.Clock}),
		Dst: zfsmodel.New(zfsmodel.Options{Seed: 2, Clock: o.Clock}),
		Job: job,
	}
	if err := p.Src.CreatePool("src"); err != nil {
		return nil, err
	}
	if err := p.Dst.CreatePool("dst"); err != nil {
		return nil, err
	}
	p.Sender = Sender(p.Src, p.Job)
	return p, nil
}

// Sender is job's sender on z as a pair has it: it lists below src and
// sends the filesystems below src/data (for a restored or replaced source
// host, or another job).
func Sender(z zfs.ZFS, job endpoint.JobID) *endpoint.Sender {
	return &endpoint.Sender{
		ZFS: z, Job: job, Roots: []zfs.DatasetPath{zfs.MustDatasetPath("src")},
		Filter: func(fs zfs.DatasetPath) bool { return fs.HasPrefix(Data) },
	}
}

// Receiver is the job's receiver into root on Dst.
func (p *Pair) Receiver(root string) (*endpoint.Receiver, error) {
	r, err := zfs.NewDatasetPath(root)
	if err != nil {
		return nil, err
	}
	return &endpoint.Receiver{ZFS: p.Dst, Job: p.Job, Root: r}, nil
}

// WriteSnap writes blocks data blocks (their content from seed) into fs
// on Src and snapshots it as snap.
func (p *Pair) WriteSnap(fs string, seed int64, blocks int, snap string) error {
	f, err := zfs.NewDatasetPath(fs)
	if err != nil {
		return err
	}
	if err := p.Src.WriteData(f, seed, blocks); err != nil {
		return err
	}
	return p.Src.Snapshot(context.Background(), f, snap)
}
