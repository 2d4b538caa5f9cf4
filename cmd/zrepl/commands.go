package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/transport"
)

const defaultConfig = "/etc/zrepl/zrepl.yml"

func configFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "config", defaultConfig, "path of the YAML config")
}

// loadConfig parses the config, reporting every problem.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.ParseFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return cfg, nil
}

func newDaemonCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "run all jobs of the config until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			// Before the backend opens: a second daemon must not even
			// load (and save) the state the first one owns.
			lock, err := daemon.LockState(cfg)
			if err != nil {
				return err
			}
			defer lock.Release()
			s, err := buildSystem(cfg, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			defer s.close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = s.daemon.Run(ctx)
			s.log.Info("daemon stopped")
			return err
		},
	}
	configFlag(cmd, &configPath)
	return cmd
}

// client connects to the daemon of the config.
func client(configPath string) (*daemon.Client, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	return daemon.NewClient(cfg.Global.ControlSockPath), nil
}

func newStatusCommand() *cobra.Command {
	var configPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the state and progress of every job of the running daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(configPath)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st, time.Now())
			return nil
		},
	}
	configFlag(cmd, &configPath)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(w io.Writer, st []job.Status, now time.Time) {
	for _, s := range st {
		fmt.Fprintf(w, "job %s (%s): %s", s.Name, s.Type, s.State)
		switch {
		case s.NextRun.IsZero():
		case s.NextRun.After(now):
			fmt.Fprintf(w, ", next run in %s", s.NextRun.Sub(now).Round(time.Second))
		default:
			fmt.Fprint(w, ", next run due")
		}
		fmt.Fprintln(w)
		if s.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", strings.ReplaceAll(s.LastError, "\n", "\n    "))
		}
		if len(s.Pruned) > 0 {
			sides := slices.Sorted(maps.Keys(s.Pruned))
			parts := make([]string, len(sides))
			for i, side := range sides {
				parts[i] = fmt.Sprintf("%d on the %s", s.Pruned[side], side)
			}
			fmt.Fprintf(w, "  snapshots pruned since start: %s\n", strings.Join(parts, ", "))
		}
		r := s.Replication
		if r == nil {
			continue
		}
		what := "replication"
		if r.Finished {
			what = "last replication"
		}
		fmt.Fprintf(w, "  %s: attempt %d, %s of %s", what, r.Attempt, bytesStr(r.BytesDone), bytesStr(r.BytesExpected))
		if !r.Finished && r.Rate > 0 {
			fmt.Fprintf(w, " at %s/s, ETA %s", bytesStr(int64(r.Rate)), r.ETA().Round(time.Second))
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, f := range r.Filesystems {
			fmt.Fprintf(tw, "    %s\t%s\t%d/%d steps\t%s/%s", f.FS, f.State, f.StepsDone, f.Steps, bytesStr(f.BytesDone), bytesStr(f.BytesExpected))
			if f.Rate > 0 && !r.Finished {
				fmt.Fprintf(tw, "\t%s/s", bytesStr(int64(f.Rate)))
			}
			if f.ETASeconds > 0 {
				fmt.Fprintf(tw, "\tETA %s", time.Duration(f.ETASeconds*float64(time.Second)).Round(time.Second))
			}
			if f.LastError != "" {
				fmt.Fprintf(tw, "\t%s", f.LastError)
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
}

func bytesStr(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newSignalCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "signal wakeup|reset JOB | signal concurrency JOB N",
		Short: "wake a job up, cancel its replication, or change its step concurrency",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := daemon.SignalRequest{Signal: args[0], Job: args[1]}
			switch args[0] {
			case "wakeup", "reset":
				if len(args) != 2 {
					return fmt.Errorf("signal %s takes one argument, the job", args[0])
				}
			case "concurrency":
				if len(args) != 3 {
					return errors.New("signal concurrency takes the job and a number")
				}
				n, err := strconv.Atoi(args[2])
				if err != nil || n < 1 {
					return fmt.Errorf("concurrency %q: want a number of at least 1", args[2])
				}
				req.N = n
			default:
				return fmt.Errorf("unknown signal %q (want wakeup, reset or concurrency)", args[0])
			}
			c, err := client(configPath)
			if err != nil {
				return err
			}
			return c.Signal(cmd.Context(), req)
		},
	}
	configFlag(cmd, &configPath)
	return cmd
}

func newMigrateCommand() *cobra.Command {
	var configPath string
	var dryRun, offline bool
	cmd := &cobra.Command{
		Use:   "migrate replication-cursor:v1-v2",
		Short: "destroy v1 replication cursors where a v2 cursor exists (via the running daemon)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "replication-cursor:v1-v2" {
				return fmt.Errorf("unknown migration %q (known: replication-cursor:v1-v2)", args[0])
			}
			var done []string
			err := viaDaemon(cmd, configPath, offline, !dryRun, func(c *daemon.Client) (err error) {
				done, err = c.MigrateCursors(cmd.Context(), dryRun)
				return err
			}, func(b *backend, cfg *config.Config) (err error) {
				done, err = daemon.MigrateCursors(cmd.Context(), b.zfs, cfg, dryRun)
				return err
			})
			verb := "destroyed"
			if dryRun {
				verb = "would destroy"
			}
			for _, v := range done {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", verb, v)
			}
			return err
		},
	}
	configFlag(cmd, &configPath)
	offlineFlag(cmd.Flags(), &offline)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be destroyed")
	return cmd
}

func newStdinserverCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "stdinserver IDENTITY",
		Short: "ssh forced command: connect stdin/stdout to the daemon as IDENTITY",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			if err := transport.ValidateIdentity(args[0]); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return transport.StdinServer(ctx, daemon.StdinserverSocket(&cfg.Global, args[0]), args[0], os.Stdin, os.Stdout)
		},
	}
	configFlag(cmd, &configPath)
	return cmd
}

func notRunning(err error) bool {
	var nr *daemon.NotRunningError
	return errors.As(err, &nr)
}

func offlineFlag(f *pflag.FlagSet, p *bool) {
	f.BoolVar(p, "offline", false, "work on the backend directly instead of through the daemon; refused while a daemon runs with this config's state")
}

// viaDaemon runs online on the daemon's control socket, or with offline
// direct on the backend itself. A command never falls back to the
// backend by itself: a daemon that does not answer may still be running
// (a deleted socket, no permission, busy), and changing its state behind
// its back releases holds of replications in flight. writes says whether
// direct changes the backend: then it holds the state lock throughout
// (no daemon can start meanwhile); otherwise it only checks that no
// daemon holds the state, and the backend is opened read-only (nothing
// saved).
func viaDaemon(cmd *cobra.Command, configPath string, offline, writes bool, online func(*daemon.Client) error, direct func(*backend, *config.Config) error) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	if !offline {
		err := online(daemon.NewClient(cfg.Global.ControlSockPath))
		if notRunning(err) {
			return fmt.Errorf("%w\n(to work on the backend directly while no daemon runs, add --offline)", err)
		}
		return err
	}
	if writes {
		lock, err := daemon.LockState(cfg)
		if err != nil {
			return fmt.Errorf("--offline: %w; stop the daemon, or drop --offline to go through its control socket", err)
		}
		defer lock.Release()
	} else if err := daemon.ProbeState(cfg); err != nil {
		return fmt.Errorf("--offline: %w; drop --offline to ask the daemon", err)
	}
	b, err := openBackend(cfg, slog.New(slog.DiscardHandler), !writes)
	if err != nil {
		return err
	}
	err = direct(b, cfg)
	if b.persist != nil {
		// Also after a partial failure: what was done stays done.
		err = errors.Join(err, b.persist())
	}
	return err
}
