package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// newTestCommand is zrepl's `test`: diagnostics that read the backend
// (read-only: they never write a model backend's state, so they need no
// --offline) and change nothing.
func newTestCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test",
		Short: "diagnostics that change nothing",
	}
	cmd.AddCommand(newDecodeTokenCommand(), newTestFilesystemsCommand(), newTestPlaceholderCommand())
	return cmd
}

func newDecodeTokenCommand() *cobra.Command {
	var asJSON bool
	var token string
	cmd := &cobra.Command{
		Use:   "decoderesumetoken --token TOKEN | decoderesumetoken TOKEN",
		Short: "decode a ZFS receive_resume_token without a zfs binary",
		Long: "decode a ZFS receive_resume_token without a zfs binary. With --token it prints the JSON zrepl prints;\n" +
			"with the token as argument, one line of text (--json: every field as JSON).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case token != "" && len(args) == 1:
				return errors.New("give the token once: as --token or as the argument")
			case token == "" && len(args) == 0:
				return errors.New("token argument must be specified (--token TOKEN)")
			}
			raw := token
			if raw == "" {
				raw = args[0]
			}
			tok, err := resumetoken.Decode(raw)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if token != "" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", " ")
				return enc.Encode(zreplToken(tok))
			}
			if asJSON {
				return writeJSON(w, tok)
			}
			fmt.Fprintln(w, tok.String())
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "the resume token obtained from the receive_resume_token property")
	cmd.Flags().BoolVar(&asJSON, "json", false, "with the token as argument: print the fields as JSON")
	return cmd
}

// zreplTokenJSON is zrepl's JSON of a decoded token (its field names).
// A flag the stream did not use is absent from the token; so Has* of a
// flag is its value.
type zreplTokenJSON struct {
	HasFromGUID, HasToGUID        bool
	FromGUID, ToGUID              uint64
	ToName                        string
	HasCompressOK, CompressOK     bool
	HasRawOk, RawOK               bool
	HasLargeBlockOK, LargeBlockOK bool
	HasEmbedOk, EmbedOK           bool
	HasSavedOk, SavedOk           bool
}

func zreplToken(t resumetoken.Token) zreplTokenJSON {
	return zreplTokenJSON{
		HasFromGUID: t.FromGUID != 0, HasToGUID: true, FromGUID: t.FromGUID, ToGUID: t.ToGUID, ToName: t.ToName,
		HasCompressOK: t.CompressOK, CompressOK: t.CompressOK, HasRawOk: t.RawOK, RawOK: t.RawOK,
		HasLargeBlockOK: t.LargeBlockOK, LargeBlockOK: t.LargeBlockOK, HasEmbedOk: t.EmbedOK, EmbedOK: t.EmbedOK,
		HasSavedOk: t.SavedOK, SavedOk: t.SavedOK,
	}
}

// allFilesystems lists every filesystem of every pool.
func allFilesystems(cmd *cobra.Command, z zfs.ZFS) ([]zfs.FilesystemInfo, error) {
	pools, err := z.ListPools(cmd.Context())
	if err != nil {
		return nil, fmt.Errorf("could not list ZFS pools: %w", err)
	}
	var out []zfs.FilesystemInfo
	for _, p := range pools {
		infos, err := z.ListFilesystems(cmd.Context(), p)
		if err != nil {
			return nil, fmt.Errorf("could not list ZFS filesystems: %w", err)
		}
		out = append(out, infos...)
	}
	return out, nil
}

func newTestFilesystemsCommand() *cobra.Command {
	var configPath, jobName, input string
	var all bool
	cmd := &cobra.Command{
		Use:   "filesystems --job JOB [--all | --input INPUT]",
		Short: "test a job's filesystems filter: with --all or --input, ACCEPT or REJECT per filesystem (as zrepl); with neither, the existing filesystems it matches",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all && input != "" {
				return errors.New("must set one: --all or --input")
			}
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
			w := cmd.OutOrStdout()
			verdict := func(p zfs.DatasetPath) string {
				if j.Filesystems.Match(p) {
					return "ACCEPT"
				}
				return "REJECT"
			}
			if input != "" {
				p, err := zfs.NewDatasetPath(input)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s\t%s\t\n", verdict(p), p)
				return nil
			}
			b, err := openBackend(cfg, slog.New(slog.DiscardHandler), true)
			if err != nil {
				return err
			}
			if all {
				infos, err := allFilesystems(cmd, b.zfs)
				if err != nil {
					return err
				}
				for _, info := range infos {
					fmt.Fprintf(w, "%s\t%s\t\n", verdict(info.Path), info.Path)
				}
				return nil
			}
			fss, err := daemon.MatchFilesystems(cmd.Context(), b.zfs, j.Filesystems)
			if err != nil {
				return err
			}
			for _, fs := range fss {
				fmt.Fprintln(w, fs)
			}
			return nil
		},
	}
	configFlag(cmd, &configPath)
	cmd.Flags().StringVar(&jobName, "job", "", "the job whose filter is tested (required)")
	cmd.Flags().StringVar(&input, "input", "", "a filesystem name to test against the job's filter (need not exist)")
	cmd.Flags().BoolVar(&all, "all", false, "test every filesystem of every pool")
	cmd.MarkFlagRequired("job")
	return cmd
}

func newTestPlaceholderCommand() *cobra.Command {
	var configPath, dataset string
	var all bool
	cmd := &cobra.Command{
		Use:   "placeholder [--all | --dataset DATASET]",
		Short: fmt.Sprintf("list received placeholder filesystems (zfs property %q)", zfs.PlaceholderProperty),
		Example: `  zrepl test placeholder --all
  zrepl test placeholder --dataset path/to/sink/clientident/fs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case all && dataset != "":
				return errors.New("must specify --dataset DATASET or --all, not both")
			case !all && dataset == "":
				return errors.New("must specify --dataset DATASET or --all")
			}
			var want zfs.DatasetPath
			if dataset != "" {
				p, err := zfs.NewDatasetPath(dataset)
				if err != nil {
					return err
				}
				want = p
			}
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			b, err := openBackend(cfg, slog.New(slog.DiscardHandler), true)
			if err != nil {
				return err
			}
			var infos []zfs.FilesystemInfo
			if all {
				infos, err = allFilesystems(cmd, b.zfs)
			} else {
				infos, err = b.zfs.ListFilesystems(cmd.Context(), want)
				if errors.Is(err, zfs.ErrDatasetNotExist) {
					return fmt.Errorf("filesystem %q does not exist", dataset)
				}
			}
			if err != nil {
				return fmt.Errorf("cannot get placeholder state: %w", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "IS_PLACEHOLDER\tDATASET\t%s\n", zfs.PlaceholderProperty)
			for _, info := range infos {
				if !all && info.Path != want {
					continue // the listing includes the children
				}
				is, raw := "no", ""
				if info.Placeholder {
					is, raw = "yes", "on"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", is, info.Path, raw)
			}
			return nil
		},
	}
	configFlag(cmd, &configPath)
	cmd.Flags().StringVar(&dataset, "dataset", "", "dataset path")
	cmd.Flags().BoolVar(&all, "all", false, "list tab-separated placeholder status of all filesystems")
	return cmd
}
