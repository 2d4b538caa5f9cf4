package hooks

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// Bounds of what one command hook run puts into the log and the status: a
// hook that prints without end must not fill the disk or the daemon's
// memory.
const (
	// maxLogBytes per stream and run; the rest is counted, not logged.
	maxLogBytes = 64 << 10
	// maxLineBytes per logged line; longer lines are cut.
	maxLineBytes = 4 << 10
	// maxTailBytes of stdout and stderr together are kept for the status.
	maxTailBytes = 4 << 10
)

// lineLog logs a stream line by line at one level, within maxLogBytes.
type lineLog struct {
	log     *slog.Logger
	level   slog.Level
	stream  string
	partial []byte
	logged  int
	dropped int64
}

func (w *lineLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLineBytes - len(w.partial)
			if len(p) > room {
				w.partial = append(w.partial, p[:max(room, 0)]...)
				w.dropped += int64(len(p) - max(room, 0))
			} else {
				w.partial = append(w.partial, p...)
			}
			break
		}
		line := p[:i]
		if room := maxLineBytes - len(w.partial); len(line) > room {
			w.dropped += int64(len(line) - max(room, 0))
			line = line[:max(room, 0)]
		}
		w.partial = append(w.partial, line...)
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

// emit logs the collected line, if the budget allows.
func (w *lineLog) emit() {
	line := w.partial
	w.partial = w.partial[:0]
	if w.logged+len(line) > maxLogBytes {
		w.dropped += int64(len(line)) + 1
		return
	}
	w.logged += len(line) + 1
	w.log.Log(context.Background(), w.level, "hook output", w.stream, string(line))
}

// close logs a last line without newline and says what was not logged.
func (w *lineLog) close() {
	if len(w.partial) > 0 {
		w.emit()
	}
	if w.dropped > 0 {
		w.log.Warn("hook output not logged (over the bound per run)", "stream", w.stream, "bytes", w.dropped)
	}
}

// tail keeps the last maxTailBytes written to it, from both streams.
type tail struct {
	mu   sync.Mutex
	buf  []byte
	lost bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - maxTailBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.lost = true
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost {
		return "…" + string(t.buf)
	}
	return string(t.buf)
}
