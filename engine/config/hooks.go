package config

import (
	"path/filepath"
	"slices"

	"zrepl.dev/zrepl/engine/hooks"
)

// Hook is one entry of snapshotting.hooks (periodic and cron snapshotting):
// what to run before and after each filesystem's snapshot. The spec's
// Filesystems is a *Filter, nil where a command hook has none (every
// filesystem the job snapshots).
type Hook struct {
	hooks.Spec
	Line int

	at       string // YAML path, for CheckFiles
	pathLine int
	file     string // an included file, for CheckFiles
}

// HookSpecs are the hooks' specs in config order.
func (s *Snapshotting) HookSpecs() []hooks.Spec {
	if s == nil || len(s.Hooks) == 0 {
		return nil
	}
	out := make([]hooks.Spec, len(s.Hooks))
	for i, h := range s.Hooks {
		out[i] = h.Spec
	}
	return out
}

var hookTypes = func() []string {
	out := make([]string, len(hooks.Types))
	for i, t := range hooks.Types {
		out[i] = string(t)
	}
	return out
}()

// hooks decodes snapshotting.hooks. What Parse can tell without looking
// at the host is checked here (a command's path is absolute, a DSN
// parses); whether the executable exists is CheckFiles' question.
// dsnWant says what a database hook's dsn looks like.
var dsnWant = map[hooks.Type]string{
	hooks.PostgresCheckpoint: `a libpq connection string like "host=db port=5432 user=zrepl dbname=app" or a postgres:// URL`,
	hooks.MySQLLockTables:    `a DSN like "user:password@tcp(db:3306)/"`,
}

func (d *decoder) hooks(sm *mapping) []Hook {
	items, ok := sm.list("hooks")
	if !ok {
		return nil
	}
	var out []Hook
	for i, it := range items {
		p := index(child(sm.path, "hooks"), i)
		if d.resolve(it) == nil {
			d.errf(p, it.Line, "want a hook mapping, got null")
			continue
		}
		hm := d.mapping(p, child(sm.schema, "hooks"), it, it.Line)
		if !hm.valid {
			continue
		}
		typ, ok := d.typeOf(hm, "hook", hookTypes...)
		if !ok {
			continue
		}
		h := Hook{Spec: hooks.Spec{Type: hooks.Type(typ)}, Line: hm.line, at: p, file: d.file}
		h.ErrIsFatal = hm.boolean("err_is_fatal", false)
		h.Timeout = hm.duration("timeout", hooks.DefaultTimeout)
		// zrepl requires a filter of the database hooks: a CHECKPOINT
		// or a global read lock for every filesystem is rarely meant.
		why := ""
		if h.Type != hooks.Command {
			why = "a " + typ + " hook runs only for the filesystems it names"
		}
		if f := d.filesystems(hm, why); f != nil {
			h.Filesystems = f
		}
		switch h.Type {
		case hooks.Command:
			h.Path = hm.reqStr("path", "the executable to run before and after each snapshot")
			h.pathLine = hm.keyLine("path")
			if h.Path != "" && !filepath.IsAbs(h.Path) {
				d.errf(child(p, "path"), h.pathLine, "path %q must be absolute (hooks run without arguments; wrap a command line in a script)", h.Path)
			}
		default:
			h.DSN = hm.reqStr("dsn", "how to connect to the database")
			if h.DSN != "" {
				if err := hooks.CheckDSN(h.Type, h.DSN); err != nil {
					d.errf(child(p, "dsn"), hm.keyLine("dsn"), "%v (want %s)", err, dsnWant[h.Type])
				}
			}
		}
		hm.done()
		out = append(out, h)
	}
	return out
}

// CheckFiles checks the files a parsed config names, which Parse leaves
// alone so that a config can be checked on another host: every command
// hook's path must be an executable file. configcheck and the daemon's
// start call it; problems come as *Errors with path and line.
func CheckFiles(c *Config) error {
	var errs []*Error
	for _, j := range c.Jobs {
		if j.Snapshotting == nil {
			continue
		}
		for _, h := range j.Snapshotting.Hooks {
			if h.Type != hooks.Command {
				continue
			}
			if err := hooks.CheckExecutable(h.Path); err != nil {
				errs = append(errs, &Error{Path: child(h.at, "path"), Line: h.pathLine, Msg: err.Error(), File: h.file})
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	e := &Errors{List: slices.Clip(errs)}
	e.sort()
	return e
}
