// Command zrepl is the ZFS replication daemon and its command-line client.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"zrepl.dev/zrepl/engine/daemon"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCommand(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "zrepl:", err)
		os.Exit(1)
	}
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "zrepl",
		Short:         "ZFS replication daemon",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newVersionCommand(), newDaemonCommand(), newTestCommand(), newStatusCommand(), newSignalCommand(),
		newConfigcheckCommand(), newAbstractionsCommand(), newMigrateCommand(), newStdinserverCommand(), newPprofCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	var configPath, show string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "print the version of this binary (client) and of the running daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if show != "" && show != "client" && show != "daemon" {
				return fmt.Errorf("--show %q: want client or daemon (or neither, for both)", show)
			}
			w := cmd.OutOrStdout()
			client := daemon.NewVersionInfo(version)
			if show != "daemon" {
				fmt.Fprintf(w, "client: %s\n", client)
			}
			if show == "client" {
				return nil
			}
			d, err := daemonVersion(cmd, configPath)
			if err != nil {
				if show == "daemon" {
					return err
				}
				// Without --show the client's version is what was
				// asked for most: the daemon's absence is a note.
				fmt.Fprintf(cmd.ErrOrStderr(), "server: %v\n", err)
				return nil
			}
			fmt.Fprintf(w, "server: %s\n", d)
			if show == "" && d.Version != client.Version {
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: client version != daemon version, restart zrepl daemon")
			}
			return nil
		},
	}
	configFlag(cmd, &configPath)
	cmd.Flags().StringVar(&show, "show", "", "version info to show (client|daemon)")
	return cmd
}

func daemonVersion(cmd *cobra.Command, configPath string) (daemon.VersionInfo, error) {
	c, err := client(configPath)
	if err != nil {
		return daemon.VersionInfo{}, err
	}
	return c.Version(cmd.Context())
}

func newPprofCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "pprof",
		Short: "profiling endpoints of the running daemon",
	}
	listen := &cobra.Command{
		Use:   "listen off | listen on TCP_LISTEN_ADDRESS",
		Short: "start (or stop) an HTTP server with go tool pprof's endpoints (net/http/pprof) on the daemon, at TCP_LISTEN_ADDRESS",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req daemon.PprofRequest
			switch {
			case args[0] == "off" && len(args) == 1:
			case args[0] == "on" && len(args) == 2:
				req = daemon.PprofRequest{Run: true, HttpListenAddress: args[1]}
			default:
				return errors.New("want `pprof listen off` or `pprof listen on TCP_LISTEN_ADDRESS`")
			}
			c, err := client(configPath)
			if err != nil {
				return err
			}
			addr, err := c.Pprof(cmd.Context(), req)
			if err != nil {
				return err
			}
			if req.Run {
				fmt.Fprintf(cmd.OutOrStdout(), "pprof listening on %s (go tool pprof http://%s/debug/pprof/heap)\n", addr, addr)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "pprof listener off")
			}
			return nil
		},
	}
	configFlag(listen, &configPath)
	cmd.AddCommand(listen)
	return cmd
}
