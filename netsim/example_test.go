package netsim_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"zrepl.dev/zrepl/netsim"
)

func Example() {
	n := netsim.New(1)
	l, _ := n.Listen("server", 8888)
	go func() {
		c, _ := l.Accept()
		_, _ = io.Copy(c, c) // echo until the client half-closes
		_ = c.Close()
	}()
	c, _ := n.Dial(context.Background(), "client", "server:8888")
	fmt.Println(c.LocalAddr(), "->", c.RemoteAddr())
	_, _ = c.Write([]byte("hello"))
	_ = c.(*netsim.Conn).CloseWrite()
	b, _ := io.ReadAll(c)
	fmt.Println(string(b))
	_ = c.Close()
	_ = l.Close()
	// Output:
	// client:49152 -> server:8888
	// hello
}

func ExampleGeneratePlan() {
	plan, _ := netsim.GeneratePlan(3, netsim.PlanConfig{
		Faults: 4, Conns: 3, MaxByte: 1 << 20, MaxStall: time.Minute,
		Hosts: []string{"a", "b"}, Horizon: time.Hour, MaxPartition: 5 * time.Minute,
	})
	fmt.Println(plan)
	// Output:
	// fault plan (seed 3, 4 faults)
	//   partition b|a at +10m31.084s for 1m32.313s
	//   dial#2: refused
	//   conn#3 down: stall at byte 804966 for 29.042s
	//   conn#3 down: half-open at byte 843019
}
