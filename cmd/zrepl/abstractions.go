package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/zfs"
)

// newAbstractionsCommand is zrepl's zfs-abstraction (list, release-all,
// release-stale), with its flags and output; `holds` is an alias. Unlike
// zrepl's, it goes through the daemon (which owns a model backend's
// state), or with --offline to the backend itself.
func newAbstractionsCommand() *cobra.Command {
	var configPath string
	var offline, asJSON bool
	var q daemon.AbstractionQuery
	cmd := &cobra.Command{
		Use:     "zfs-abstraction",
		Aliases: []string{"holds"},
		Short:   "list and release the holds and bookmarks zrepl builds on top of ZFS (via the running daemon)",
	}
	cmd.PersistentFlags().StringVar(&configPath, "config", "", configHelp)
	offlineFlag(cmd.PersistentFlags(), &offline)
	filterFlags := func(c *cobra.Command, verb string) {
		f := c.Flags()
		f.StringVar(&q.FS, "fs", "", fmt.Sprintf("only %s holds and bookmarks on this filesystem [default: all filesystems] [or a comma-separated list of <dataset-pattern>:<ok|!> pairs]", verb))
		f.StringVar(&q.Job, "job", "", fmt.Sprintf("only %s those of this job [default: any job]", verb))
		f.StringSliceVar(&q.Types, "type", nil, fmt.Sprintf("only %s those of these types [default: all] [comma-separated list of last-received-hold|replication-cursor-bookmark-v1|replication-cursor-bookmark-v2|step-hold|step-bookmark]", verb))
		f.IntVarP(&q.Concurrency, "concurrency", "p", 1, "number of filesystems listed at once")
		f.BoolVar(&asJSON, "json", false, "print JSON")
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "list the holds and bookmarks zrepl made",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var hs []daemon.Hold
			err := viaDaemon(cmd, configPath, offline, false, func(c *daemon.Client) (err error) {
				hs, err = c.Abstractions(cmd.Context(), q)
				return err
			}, func(b *backend, _ *config.Config) (err error) {
				hs, err = daemon.ListAbstractions(cmd.Context(), b.zfs, q)
				return err
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, h := range hs {
				if asJSON {
					// zrepl's form: one indented object each, then
					// a blank line.
					if err := writeJSON(w, abstractionJSON(h)); err != nil {
						return err
					}
					fmt.Fprintln(w)
				} else {
					fmt.Fprintln(w, h.ZreplString())
				}
			}
			return nil
		},
	}
	filterFlags(list, "list")

	var dryRun bool
	releaseCmd := func(use, short string, online func(ctx context.Context, c *daemon.Client) ([]daemon.Hold, error), direct func(context.Context, *backend, *config.Config) ([]daemon.Hold, error)) *cobra.Command {
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				var done []daemon.Hold
				err := viaDaemon(cmd, configPath, offline, !dryRun, func(c *daemon.Client) (err error) {
					done, err = online(cmd.Context(), c)
					return err
				}, func(b *backend, cfg *config.Config) (err error) {
					done, err = direct(cmd.Context(), b, cfg)
					return err
				})
				if werr := printReleased(cmd.OutOrStdout(), done, dryRun, asJSON); werr != nil {
					return werr
				}
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					if len(done) > 0 || dryRun {
						return errors.New("there were errors in destroying the abstractions")
					}
				}
				return err
			},
		}
		filterFlags(c, "release")
		c.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be released")
		return c
	}
	releaseStale := releaseCmd("release-stale",
		"release the step holds and step bookmarks their jobs say are stale, and last-received holds of removed jobs that a configured job's hold supersedes",
		func(ctx context.Context, c *daemon.Client) ([]daemon.Hold, error) {
			return c.ReleaseStale(ctx, q, dryRun)
		},
		func(ctx context.Context, b *backend, cfg *config.Config) ([]daemon.Hold, error) {
			// No daemon holds the state, so no replication runs.
			return daemon.ReleaseStale(ctx, b.zfs, cfg, func(string) bool { return false }, q, dryRun)
		})
	releaseAll := releaseCmd("release-all",
		"(DANGEROUS) release ALL holds and bookmarks zrepl made that the filters select, cursors included (to remove zrepl from a filesystem, or a removed job's leftovers)",
		func(ctx context.Context, c *daemon.Client) ([]daemon.Hold, error) {
			return c.ReleaseAll(ctx, q, dryRun)
		},
		func(ctx context.Context, b *backend, _ *config.Config) ([]daemon.Hold, error) {
			return daemon.ReleaseAll(ctx, b.zfs, q, dryRun)
		})
	cmd.AddCommand(list, releaseStale, releaseAll)
	return cmd
}

// zreplAbstraction is zrepl's JSON form of an abstraction (and the hold's
// tag, which zrepl's leaves out).
type zreplAbstraction struct {
	Type              string
	FS                string
	Name              string
	FullPath          string
	JobID             *string
	CreateTXG         uint64
	FilesystemVersion zreplVersion
	String            string
	Tag               string `json:",omitempty"`
}

type zreplVersion struct {
	Type      string
	Name      string
	Guid      uint64
	CreateTXG uint64
}

func abstractionJSON(h daemon.Hold) zreplAbstraction {
	a := zreplAbstraction{Type: h.ZreplType(), FullPath: h.Version, CreateTXG: h.TXG, String: h.ZreplString(), Tag: h.Tag}
	if ref, err := zfs.ParseVersionRef(h.Version); err == nil {
		a.FS, a.Name = ref.FS.String(), ref.Name
		a.FilesystemVersion = zreplVersion{Type: "snapshot", Name: ref.Name, Guid: h.GUID, CreateTXG: h.TXG}
		if ref.Kind == zfs.Bookmark {
			a.FilesystemVersion.Type = "bookmark"
		}
	}
	if h.Job != "" {
		job := h.Job
		a.JobID = &job
	}
	return a
}

// printReleased prints what a release did as zrepl does: "would destroy"
// per abstraction for a dry run, "destroy ... OK" per released one; with
// JSON a list for a dry run, else one result object each.
func printReleased(w io.Writer, done []daemon.Hold, dryRun, asJSON bool) error {
	if asJSON && dryRun {
		out := make([]zreplAbstraction, len(done))
		for i, h := range done {
			out[i] = abstractionJSON(h)
		}
		return writeJSON(w, out)
	}
	for _, h := range done {
		switch {
		case asJSON:
			if err := writeJSON(w, struct {
				Abstraction zreplAbstraction
				DestroyErr  *string
			}{abstractionJSON(h), nil}); err != nil {
				return err
			}
		case dryRun:
			fmt.Fprintf(w, "would destroy %s\n", h.ZreplString())
		default:
			fmt.Fprintf(w, "destroy %s ... OK\n", h.ZreplString())
		}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
