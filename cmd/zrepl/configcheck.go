package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	yaml "go.yaml.in/yaml/v3"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/inspect"
	"zrepl.dev/zrepl/engine/logging"
	"zrepl.dev/zrepl/zfsreal"
)

// configcheck does what zrepl's does: parse the config, build its jobs
// (reading every certificate and key file unless --skip-cert-check) and
// its logging outlets, report each problem with path and line, and with
// --format print what it built (--what).
func newConfigcheckCommand() *cobra.Command {
	var configPath, format, what string
	var skipCertCheck bool
	cmd := &cobra.Command{
		Use:   "configcheck",
		Short: "check a config: parse it, build its jobs and logging, print every problem with its path and line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			printer, ok := printers[format]
			if !ok {
				return fmt.Errorf("unsupported --format %q (want pretty, yaml or json)", format)
			}
			if !slicesContains([]string{"all", "config", "jobs", "logging"}, what) {
				return fmt.Errorf("unsupported --what %q (want all, config, jobs or logging)", what)
			}
			configPath, err := config.FindFile(configPath, config.DefaultLocations)
			if err != nil {
				return err
			}
			cfg, err := config.ParseFile(configPath)
			if err == nil {
				err = config.CheckFiles(cfg)
			}
			if err != nil {
				var errs *config.Errors
				if errors.As(err, &errs) {
					errs.File = configPath
					fmt.Fprintln(out, errs.Error())
					return fmt.Errorf("%s: %d problem(s)", configPath, len(errs.List))
				}
				return err
			}
			for _, w := range cfg.Warnings {
				file := configPath
				if w.File != "" {
					file = w.File
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: %s\n", file, w)
			}
			var problems []string
			jobs, err := daemon.New(daemon.Options{Config: cfg, ZFS: zfsreal.New(zfsreal.Options{}), Log: slog.New(slog.DiscardHandler), SkipCertCheck: skipCertCheck})
			if err != nil {
				problems = append(problems, "cannot build jobs from config: "+err.Error())
			}
			outlets, err := logging.New(cfg.Global.Logging, logging.Stdout{W: io.Discard})
			if err != nil {
				problems = append(problems, "cannot build logging from config: "+err.Error())
			} else {
				defer outlets.Close()
			}
			if format != "" {
				var v any
				switch what {
				case "config":
					v = cfg
				case "jobs":
					v = jobsOf(jobs)
				case "logging":
					v = outlets
				default:
					v = struct {
						Config  *config.Config
						Jobs    any
						Logging *logging.Handler
					}{cfg, jobsOf(jobs), outlets}
				}
				if err := printer(out, inspect.Tree(v, inspect.Options{Skip: notShown})); err != nil {
					return err
				}
			}
			if len(problems) > 0 {
				for _, p := range problems {
					fmt.Fprintf(out, "%s: %s\n", configPath, p)
				}
				return fmt.Errorf("%s: %d problem(s)", configPath, len(problems))
			}
			if format == "" {
				fmt.Fprintf(out, "%s: ok (%d jobs)\n", configPath, len(cfg.Jobs))
			}
			return nil
		},
	}
	configFlag(cmd, &configPath)
	cmd.Flags().StringVar(&format, "format", "", "print what the config builds: pretty, yaml or json")
	cmd.Flags().StringVar(&what, "what", "all", "what --format prints: all, config, jobs or logging")
	cmd.Flags().BoolVar(&skipCertCheck, "skip-cert-check", false, "do not read the TLS certificate and key files of jobs")
	return cmd
}

func jobsOf(d *daemon.Daemon) any {
	if d == nil {
		return nil
	}
	return d.Jobs()
}

// notShown leaves out gRPC's internals and loggers: noise next to what a
// config builds.
func notShown(t reflect.Type) bool {
	return strings.HasPrefix(t.PkgPath(), "google.golang.org/") || t.PkgPath() == "log/slog"
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

var printers = map[string]func(io.Writer, any) error{
	"": func(io.Writer, any) error { return nil },
	"json": func(w io.Writer, v any) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	},
	"yaml": func(w io.Writer, v any) error {
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return err
		}
		return enc.Close()
	},
	"pretty": func(w io.Writer, v any) error {
		pretty(w, v, 0)
		return nil
	},
}

// pretty writes a tree one field a line, indented.
func pretty(w io.Writer, v any, depth int) {
	ind := strings.Repeat("  ", depth)
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch c := x[k].(type) {
			case map[string]any, []any:
				if isEmpty(c) {
					fmt.Fprintf(w, "%s%s: {}\n", ind, k)
					continue
				}
				fmt.Fprintf(w, "%s%s:\n", ind, k)
				pretty(w, c, depth+1)
			default:
				fmt.Fprintf(w, "%s%s: %v\n", ind, k, c)
			}
		}
	case []any:
		for i, c := range x {
			switch c.(type) {
			case map[string]any, []any:
				fmt.Fprintf(w, "%s- [%d]\n", ind, i)
				pretty(w, c, depth+1)
			default:
				fmt.Fprintf(w, "%s- %v\n", ind, c)
			}
		}
	default:
		fmt.Fprintf(w, "%s%v\n", ind, x)
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}
