package statusui

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/job"
)

// Dump writes every job's text (or only the job called only), jobs
// separated by a line of dashes: `zrepl status --mode dump`.
func Dump(w io.Writer, st []job.Status, only string, now time.Time) error {
	shown := 0
	for _, s := range st {
		if only != "" && s.Name != only {
			continue
		}
		if shown > 0 {
			fmt.Fprintln(w, strings.Repeat("-", 80))
		}
		shown++
		for _, l := range Render(s, now) {
			fmt.Fprintln(w, l)
		}
	}
	if only != "" && shown == 0 {
		return fmt.Errorf("job %q not found", only)
	}
	return nil
}

// Raw writes the status as JSON, as the control socket returns it: a list
// of job.Status (README, "status --mode raw", says what each field
// means), or only the job called only.
func Raw(w io.Writer, st []job.Status, only string) error {
	if only != "" {
		var keep []job.Status
		for _, s := range st {
			if s.Name == only {
				keep = append(keep, s)
			}
		}
		if len(keep) == 0 {
			return fmt.Errorf("job %q not found", only)
		}
		st = keep
	}
	if st == nil {
		st = []job.Status{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}
