// Command zrepl is the ZFS replication daemon and its command-line client.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
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
	root.AddCommand(newVersionCommand(), newDaemonCommand(), newTestCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "zrepl %s\n", version)
			return nil
		},
	}
}

// errNotYet marks commands whose engine is not built yet; it is an error so
// that scripts never mistake the placeholder for a running daemon.
var errNotYet = fmt.Errorf("not yet: the daemon, its jobs and its config arrive with the daemon issue; " +
	"today the ZFS interface, zfsmodel and the resume-token codec are usable (see README)")

func newDaemonCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "run all jobs of the config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(configPath); err != nil {
				return fmt.Errorf("config %s: %w", configPath, err)
			}
			return errNotYet
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "/etc/zrepl/zrepl.yml", "path of the YAML config")
	return cmd
}
