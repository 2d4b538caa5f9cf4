// Package rpc carries replication between hosts: a client whose values
// implement replication.Sender and replication.Receiver, and a server that
// serves an endpoint.Sender (a source) or endpoint.Receivers (a sink, one
// per client, confined to <root_fs>/<identity>) to the clients a transport
// authenticated. A client may prune the server's side for its job's keep
// rules (a push job the sink's, a pull job the source's); the server
// decides what may go (SinkReceiver, SourceSender).
//
// Every connection opens with a hello carrying ProtocolVersion; a peer of
// another version is refused with an error naming both. A client keeps one
// control connection for gRPC calls (listings, send sizes, step
// confirmations, the control side of sends and receives) and opens one data
// connection per send stream. The server hands each data connection a
// ticket that the call naming it must present, from the same client. Send
// streams travel there as length-checked frames ending in an end marker
// with the byte count, so a stream cut anywhere reads as truncated (never
// as a clean end) and the receive keeps its partial state for a resume.
// The frames need no whole-stream buffer, and cancelling a call on either
// side closes its data connection.
//
// A separate data connection, rather than gRPC messages, keeps a send
// stream at the speed of a plain TCP copy (see BenchmarkStream1GiB).
// Keepalive settings of client and server are chosen together (see
// ClientKeepalive) so that a long send, during which the control
// connection is idle, is never cut off with GOAWAY too_many_pings.
package rpc
