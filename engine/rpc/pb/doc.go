// Package pb holds the generated protobuf and gRPC code of zrepl's wire
// protocol (version 7), from zrepl.proto: see that file for what the
// messages are and `make generate` for how to regenerate them. This file
// is not generated.
package pb
