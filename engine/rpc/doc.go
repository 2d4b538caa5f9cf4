// Package rpc carries replication between hosts over zrepl's wire
// protocol, version 7 (zrepl v0.7), so that a host running this project
// replicates with a host running zrepl: a client whose values implement
// replication.Sender and replication.Receiver, and a server that serves an
// endpoint.Sender (a source) or endpoint.Receivers (a sink, one per client,
// confined to <root_fs>/<identity>) to the clients a transport
// authenticated. A client may prune the server's side for its job's keep
// rules (a push job the sink's, a pull job the source's); the server
// decides what may go (endpoint.Pruner: the endpoint's rules, the same
// for a client over the wire as for a job in the same process).
//
// # The protocol (the facts this package relies on)
//
// Connections. The client opens every connection through its transport
// (tcp, tls, ssh+stdinserver, local): one control connection, kept, for
// gRPC calls, and one data connection per send or receive. The transport
// authenticates the client; its identity never travels in the protocol.
//
// Banner. On every connection each side first sends a banner:
//
//	"%010d " the length of the rest, in 10 decimal digits, and a space
//	"ZREPL_ZFS_REPLICATION PROTOVERSION=%04d EXTENSIONS=%04d\n"
//	one line "<extension>\n" per extension
//
// at most 64 KiB (16 pages) after the length. zrepl writes its banner, then
// reads the peer's; our server reads the client's first (see handshake).
// Peers whose versions differ close the connection: each side names both
// versions in its error (VersionMismatchError). zrepl v0.7 sends no
// extensions and ignores those it receives. The handshake must complete
// within 10 seconds.
//
// Label. After the banners the client sends 64 bytes, a label padded with
// NUL bytes: "zrepl_control" or "zrepl_data". The server reads it within
// 10 seconds and closes a connection with any other label.
//
// Control connection. gRPC (HTTP/2, no TLS of its own) of the service
// "Replication" (no protobuf package): /Replication/Ping,
// ListFilesystems, ListFilesystemVersions, DestroySnapshots,
// ReplicationCursor, SendDry, SendCompleted; pb/zrepl.proto has the
// messages with zrepl's field numbers. Both sides use zrepl's keepalive:
// pings after 5 s without activity (gRPC's client raises that to 10 s),
// 10 s to answer, also without calls; the server permits client pings
// every 2.5 s and more rarely, with or without calls.
//
// Data connection. Frames: type (4 bytes) and payload length (4 bytes),
// big endian, then the payload. The four most significant bits of the
// type belong to the frame layer (1<<28: shutdown), the next four to the
// heartbeat layer (1<<24: heartbeat), the next four to the stream layer
// (1<<16: error trailer, 1<<17: end); the requests use 1 (request header),
// 2 (request body), 3 (response header), 4 (response body), 5 (ZFS
// stream). A message or stream of type T is frames of type T of at most
// 512 KiB each (zrepl fills each but the last), then an empty end frame;
// a stream whose source failed ends with the error's text in error-trailer
// frames and an end frame instead. A side that wrote nothing for 5 s sends
// an empty heartbeat frame; a read or write that makes no progress for
// 10 s fails, and a heartbeat received renews the write deadline (the peer
// is alive, merely not reading, e.g. busy in zfs recv). To close, a side
// sends an empty shutdown frame, half-closes, and waits up to 10 s for the
// peer's end before it closes.
//
// Requests. One per data connection: the request header message carries
// the endpoint "/v1/send", "/v1/recv" or "/v1/ping", the request body
// message its protobuf (SendReq, ReceiveReq, PingReq). For /v1/recv the
// ZFS stream follows. The server answers with a response header message,
// "HANDLER OK\n" or "HANDLER ERROR:\n" and the error's text; after OK the
// response body (SendRes, ReceiveRes, PingRes), and for /v1/send the ZFS
// stream. zrepl bounds request headers to 32 KiB, request bodies to
// 4 MiB, response headers to 32 KiB and response bodies to 8 MiB.
//
// Semantics zrepl attaches to the PDUs. The active side lists the
// filesystems, then each one's versions. SendReq names From (absent for a
// full send), To and, to resume, the receiver's resume token; its
// ReplicationConfig's protection (Initial for full, Incremental for
// incremental steps) says which step holds or bookmarks the sender takes;
// the sender chooses the send flags from its own configuration. SendDry
// estimates the size. ReceiveReq names the sender's filesystem (the
// receiver maps it below the client's root), To, and ClearResumeToken:
// discard partial receive state first (zrepl sets it whenever the send did
// not use a resume token). The receiver moves its last-received hold to To
// itself, unless the protection is guarantee_nothing. SendCompleted moves
// the sender job's replication cursor to To and releases the job's step
// holds of the filesystem. DestroySnapshots reports each snapshot's
// failure apart. ReplicationCursor returns the GUID of the source job's
// newest cursor (zrepl's pruner asks a source before pruning it).
//
// # This project's extensions
//
// Announced in the banner, used only where both sides announced them
// (extensions.go; pb/zrepl.proto numbers their fields from 1000):
// zrepl.dev/listing-v1 (one listing call with versions, hold counts,
// encryption properties and the sender job's marks),
// zrepl.dev/errors-v1 (errors keep their kinds: pb.ErrorInfo after a
// data connection's error, as a gRPC status detail, after an error
// trailer), zrepl.dev/receive-v1 (the receive request names its step; the
// service ZreplDevEndpoint: AbortPartialReceive, MoveLastReceivedHold,
// ReceiveResult). Against a zrepl peer the client does without each and
// logs once what it does instead. A sender's listing carries its job's send
// policy, so the active side plans the sends it will get (zrepl's sender
// decides its flags alone); SendCompleted says whether more steps of the
// filesystem follow (absent from zrepl: taken as the last).
//
// A separate data connection per stream, rather than gRPC messages, keeps
// a send stream at the speed of a plain TCP copy (BenchmarkStream),
// and a GOAWAY or a reset of the control connection does not cut it.
package rpc
