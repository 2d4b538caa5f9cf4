package scenarios

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// BenchmarkHistories runs the simulator's bounded budget (TestScenarios,
// 300 histories unless ZREPL_BENCH_HISTORIES says otherwise) in a child
// test process and prints how many histories per second it ran, and the
// CPU seconds one history took: the second is what to compare on a shared
// machine. (synctest bubbles need a *testing.T, which a benchmark does not
// have: hence the child process.)
func BenchmarkHistories(b *testing.B) {
	n := 300
	if s := os.Getenv("ZREPL_BENCH_HISTORIES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestScenarios$", "-test.v", "-rapid.checks="+strconv.Itoa(n), "-rapid.nofailfile")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		m := regexp.MustCompile(`(\d+) histories \(with shrinking\)`).FindSubmatch(out)
		if m == nil {
			b.Fatalf("no history count in:\n%s", out)
		}
		ran, _ := strconv.Atoi(string(m[1]))
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		rate := float64(ran) / took.Seconds()
		b.Logf("%.1f histories/s (%d in %v); %.1f ms CPU per history", rate, ran, took.Round(time.Millisecond), cpu.Seconds()*1000/float64(ran))
		b.ReportMetric(rate, "histories/s")
		b.ReportMetric(cpu.Seconds()*1000/float64(ran), "cpu-ms/history")
	}
}
