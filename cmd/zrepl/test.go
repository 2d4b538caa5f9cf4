package main

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

func newTestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test",
		Short: "diagnostics that change nothing",
	}
	var asJSON bool
	decode := &cobra.Command{
		Use:   "decoderesumetoken TOKEN",
		Short: "decode a ZFS receive_resume_token without a zfs binary",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := resumetoken.Decode(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(tok)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.String())
			return nil
		},
	}
	decode.Flags().BoolVar(&asJSON, "json", false, "print the fields as JSON")
	cmd.AddCommand(decode, newTestFilesystemsCommand())
	return cmd
}

func newTestFilesystemsCommand() *cobra.Command {
	var configPath, jobName string
	cmd := &cobra.Command{
		Use:   "filesystems",
		Short: "list the filesystems a job's filter matches, on the configured backend",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			j, ok := cfg.Job(jobName)
			if !ok {
				return fmt.Errorf("no job %q in %s", jobName, configPath)
			}
			if j.Filesystems == nil {
				return fmt.Errorf("job %s (%s) has no filesystems filter", j.Name, j.Type)
			}
			b, err := openBackend(cfg, slog.New(slog.DiscardHandler), true)
			if err != nil {
				return err
			}
			fss, err := daemon.MatchFilesystems(cmd.Context(), b.zfs, j.Filesystems)
			if err != nil {
				return err
			}
			for _, fs := range fss {
				fmt.Fprintln(cmd.OutOrStdout(), fs)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", defaultConfig, "path of the YAML config")
	cmd.Flags().StringVar(&jobName, "job", "", "the job (required)")
	cmd.MarkFlagRequired("job")
	return cmd
}
