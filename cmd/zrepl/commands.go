package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zrepl.dev/zrepl/cmd/zrepl/statusui"
	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/transport"
)

// configHelp is the --config flag's help: without it, zrepl's default
// locations are searched.
var configHelp = "path of the YAML config (default: the first of " + strings.Join(config.DefaultLocations, ", ") + " that exists)"

func configFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "config", "", configHelp)
}

// loadConfig parses the config, reporting every problem.
func loadConfig(path string) (*config.Config, error) {
	path, err := config.FindFile(path, config.DefaultLocations)
	if err != nil {
		return nil, err
	}
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
	var configPath, mode, jobName string
	var asJSON bool
	var delay time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the jobs of the running daemon: live on a terminal, else as text (--mode dump) or JSON (--mode raw)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				if mode != "" && mode != "raw" {
					return fmt.Errorf("--json is --mode raw, not --mode %s", mode)
				}
				mode = "raw"
			}
			out := cmd.OutOrStdout()
			tty := isTerminal(out)
			switch mode {
			case "":
				mode = "dump"
				if tty {
					mode = "interactive"
				}
			case "interactive":
				if !tty {
					return errors.New("--mode interactive: stdout is not a terminal (use --mode dump or --mode raw)")
				}
			case "dump", "raw":
			case "legacy":
				return errors.New("--mode legacy is zrepl's old screen and not offered: use interactive, dump or raw")
			default:
				return fmt.Errorf("--mode %q: want interactive, dump or raw", mode)
			}
			c, err := client(configPath)
			if err != nil {
				return err
			}
			if mode == "interactive" {
				return statusui.Interactive(c, statusui.Options{Delay: delay, Job: jobName}, cmd.InOrStdin(), out)
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if mode == "raw" {
				return statusui.Raw(out, st, jobName)
			}
			return statusui.Dump(out, st, jobName, time.Now())
		},
	}
	configFlag(cmd, &configPath)
	cmd.Flags().StringVar(&mode, "mode", "", "interactive (the default on a terminal), dump (the same text once; the default otherwise) or raw (JSON)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "the same as --mode raw")
	cmd.Flags().StringVar(&jobName, "job", "", "only this job")
	cmd.Flags().DurationVarP(&delay, "delay", "d", time.Second, "refresh every DELAY on the interactive screen (at least 1s)")
	return cmd
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
