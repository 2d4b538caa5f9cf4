package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

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
	cmd.AddCommand(decode)
	return cmd
}
