package zfsreal

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// HoldAll implements zfs.ZFS with one `zfs hold -- tag snap...` per batch
// of names. zfs holds each snapshot on its own and goes on after a
// failure, printing one line per failed snapshot; those lines are the
// errors.
func (c *CLI) HoldAll(ctx context.Context, tag string, snapshots []zfs.VersionRef) error {
	return c.eachSnapshot(ctx, "hold", tag, snapshots)
}

// ReleaseAll implements zfs.ZFS like HoldAll, with `zfs release`.
func (c *CLI) ReleaseAll(ctx context.Context, tag string, snapshots []zfs.VersionRef) error {
	return c.eachSnapshot(ctx, "release", tag, snapshots)
}

func (c *CLI) eachSnapshot(ctx context.Context, op, tag string, snapshots []zfs.VersionRef) error {
	if len(snapshots) == 0 {
		return nil
	}
	var names []string
	seen := map[string]bool{}
	for _, s := range snapshots {
		if err := checkRef(op, s, zfs.Snapshot); err != nil {
			return err
		}
		if err := zfs.ValidateHoldTag(tag); err != nil {
			return badInput(op, s.String(), err)
		}
		if !seen[s.String()] {
			seen[s.String()] = true
			names = append(names, s.String())
		}
	}
	var errs []error
	prefix := len(op) + len(" -- ") + len(tag)
	for _, batch := range c.batches(prefix, names, 1) {
		// An error of the whole batch (not split per snapshot) names
		// no single snapshot.
		subject := batch[0]
		if len(batch) > 1 {
			subject = fmt.Sprintf("%s and %d more", batch[0], len(batch)-1)
		}
		_, stderr, err := c.run(ctx, op, subject, append([]string{op, "--", tag}, batch...))
		if err == nil {
			continue
		}
		if isStartError(ctx, err) {
			return errors.Join(append(errs, err)...)
		}
		errs = append(errs, perSnapshot(op, batch, stderr, err)...)
	}
	return errors.Join(errs...)
}

// perSnapshot splits the stderr of a failed zfs hold or release over
// several snapshots into one error per snapshot it names, in batch order:
// "cannot hold snapshot 'p/fs@s': tag already exists on this dataset"
// names a snapshot, "cannot open 'p/fs': dataset does not exist" all of
// that filesystem's. Where no line names an asked snapshot, the command's
// error stands for the batch.
func perSnapshot(op string, batch []string, stderr string, cmdErr error) []error {
	exit := 0
	var ze *zfs.Error
	if errors.As(cmdErr, &ze) {
		exit = ze.ExitStatus
	}
	msgs := map[string]string{}
	for _, line := range strings.Split(zfsMessage(stderr), "\n") {
		_, rest, ok := strings.Cut(line, "'")
		if !ok {
			continue
		}
		name, _, ok := strings.Cut(rest, "'")
		if !ok {
			continue
		}
		for _, snap := range batch {
			if (snap == name || strings.HasPrefix(snap, name+"@")) && msgs[snap] == "" {
				msgs[snap] = line
			}
		}
	}
	if len(msgs) == 0 {
		return []error{cmdErr}
	}
	var errs []error
	for _, snap := range batch {
		if msg := msgs[snap]; msg != "" {
			errs = append(errs, &zfs.Error{Kind: classify(msg), Op: op, Dataset: snap, Msg: msg, ExitStatus: exit})
		}
	}
	return errs
}
