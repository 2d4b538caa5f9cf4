package statusui

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/job"
)

// Daemon is what the screen asks of the daemon (its control socket).
type Daemon interface {
	Status(ctx context.Context) ([]job.Status, error)
	Signal(ctx context.Context, req daemon.SignalRequest) error
}

// Options of the interactive screen.
type Options struct {
	// Delay between refreshes (at least 1s, as zrepl).
	Delay time.Duration
	// Job shows only this job; "" all of them, one at a time.
	Job string
	// Now is the clock the screen shows times against.
	Now func() time.Time
}

// MinWidth and MinHeight are the smallest screen the status is drawn on;
// below, the screen says it is too small instead of drawing garbage.
const (
	MinWidth  = 40
	MinHeight = 6
)

const help = "←/→ job  ↑/↓ PgUp/PgDn scroll  w wakeup  r reset  +/- concurrency  q quit"

// Interactive runs the live screen on in and out until the user quits.
func Interactive(d Daemon, opts Options, in io.Reader, out io.Writer) error {
	if opts.Delay < time.Second {
		return fmt.Errorf("delay %s: the minimum is 1s", opts.Delay)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &model{d: d, opts: opts}
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithInput(in), tea.WithOutput(out))
	_, err := p.Run()
	return err
}

type model struct {
	d    Daemon
	opts Options

	jobs   []job.Status
	sel    string // selected job's name
	fetchE error  // the last fetch's error
	msg    string // what the last key did
	ask    string // a question waiting for y/n (reset JOB?)

	width, height int
	scroll        int
}

type statusMsg struct {
	jobs []job.Status
	err  error
}
type tickMsg struct{}
type actionMsg struct{ msg string }

func (m *model) fetch() tea.Msg {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := m.d.Status(ctx)
	return statusMsg{st, err}
}

func (m *model) tick() tea.Cmd {
	return tea.Tick(m.opts.Delay, func(time.Time) tea.Msg { return tickMsg{} })
}

func (m *model) Init() tea.Cmd { return m.fetch }

// shown are the jobs the screen switches between.
func (m *model) shown() []job.Status {
	if m.opts.Job == "" {
		return m.jobs
	}
	for _, s := range m.jobs {
		if s.Name == m.opts.Job {
			return []job.Status{s}
		}
	}
	return nil
}

func (m *model) selected() (job.Status, int, bool) {
	jobs := m.shown()
	for i, s := range jobs {
		if s.Name == m.sel {
			return s, i, true
		}
	}
	if len(jobs) > 0 {
		return jobs[0], 0, true
	}
	return job.Status{}, 0, false
}

func (m *model) signal(req daemon.SignalRequest, done string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.d.Signal(ctx, req); err != nil {
			return actionMsg{fmt.Sprintf("%s %s: %v", req.Signal, req.Job, err)}
		}
		return actionMsg{done}
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case statusMsg:
		if msg.err != nil {
			m.fetchE = msg.err
		} else {
			m.fetchE, m.jobs = nil, msg.jobs
			if s, _, ok := m.selected(); ok {
				m.sel = s.Name
			}
		}
		return m, m.tick()
	case tickMsg:
		return m, m.fetch
	case actionMsg:
		m.msg = msg.msg
		return m, m.fetch
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

func (m *model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	cur, i, ok := m.selected()
	if m.ask != "" {
		ask := m.ask
		m.ask = ""
		if k.String() == "y" && ok {
			return m, m.signal(daemon.SignalRequest{Job: cur.Name, Signal: "reset"}, ask+" yes: reset sent")
		}
		m.msg = "reset cancelled"
		return m, nil
	}
	jobs := m.shown()
	switch k.String() {
	case "q", "ctrl+c", "esc":
		return m, tea.Quit
	case "right", "tab", "l", "n":
		if len(jobs) > 0 {
			m.sel, m.scroll = jobs[(i+1)%len(jobs)].Name, 0
		}
	case "left", "shift+tab", "h", "p":
		if len(jobs) > 0 {
			m.sel, m.scroll = jobs[(i+len(jobs)-1)%len(jobs)].Name, 0
		}
	case "down", "j":
		m.scroll++
	case "up", "k":
		m.scroll--
	case "pgdown", " ":
		m.scroll += max(m.height-4, 1)
	case "pgup":
		m.scroll -= max(m.height-4, 1)
	case "home", "g":
		m.scroll = 0
	case "w":
		if ok {
			m.msg = "waking up " + cur.Name + " ..."
			return m, m.signal(daemon.SignalRequest{Job: cur.Name, Signal: "wakeup"}, "woke up "+cur.Name)
		}
	case "r":
		if ok {
			m.ask = fmt.Sprintf("reset %s (cancel its replication)? y/n", cur.Name)
		}
	case "+", "=", "-":
		if !ok {
			break
		}
		n := max(cur.Concurrency, 1)
		if k.String() == "-" {
			n--
		} else {
			n++
		}
		if n < 1 {
			m.msg = "concurrency is at least 1"
			break
		}
		return m, m.signal(daemon.SignalRequest{Job: cur.Name, Signal: "concurrency", N: n}, fmt.Sprintf("concurrency of %s: %d", cur.Name, n))
	}
	m.scroll = max(m.scroll, 0)
	return m, nil
}

// View draws exactly the terminal's size: every line cut to its width,
// the detail scrolled to fit its height.
func (m *model) View() string {
	w, h := m.width, m.height
	if w == 0 || h == 0 {
		return "" // the size is not known yet
	}
	if w < MinWidth || h < MinHeight {
		return fit([]string{fmt.Sprintf("terminal too small (%dx%d, need %dx%d)", w, h, MinWidth, MinHeight)}, w, h)
	}
	cur, _, ok := m.selected()
	var tabs []string
	for _, s := range m.shown() {
		if s.Name == cur.Name {
			tabs = append(tabs, "["+s.Name+"]")
		} else {
			tabs = append(tabs, " "+s.Name+" ")
		}
	}
	top := []string{
		fmt.Sprintf("zrepl status  %s  %s", m.opts.Now().Format("2006-01-02 15:04:05"), strings.Join(tabs, "")),
		strings.Repeat("─", w),
	}
	var body []string
	switch {
	case ok:
		body = Render(cur, m.opts.Now())
	case m.jobs == nil && m.fetchE == nil:
		body = []string{"asking the daemon ..."}
	case m.opts.Job != "":
		body = []string{fmt.Sprintf("job %q not found", m.opts.Job)}
	default:
		body = []string{"the daemon has no jobs"}
	}
	bottom := help
	switch {
	case m.ask != "":
		bottom = m.ask
	case m.fetchE != nil:
		bottom = "status: " + m.fetchE.Error()
	case m.msg != "":
		bottom = m.msg + "   (" + help + ")"
	}
	room := h - len(top) - 1
	maxScroll := max(len(body)-room, 0)
	m.scroll = min(m.scroll, maxScroll)
	body = body[m.scroll:]
	if len(body) > room {
		more := len(body) - (room - 1)
		body = append(body[:room-1:room-1], fmt.Sprintf("... %d more lines (↓, PgDn)", more))
	}
	lines := append(top, body...)
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	return fit(append(lines, bottom), w, h)
}

// fit cuts lines to w cells and h lines.
func fit(lines []string, w, h int) string {
	if len(lines) > h {
		lines = lines[:h]
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = ansi.Truncate(strings.ReplaceAll(l, "\t", " "), w, "…")
	}
	return strings.Join(out, "\n")
}
