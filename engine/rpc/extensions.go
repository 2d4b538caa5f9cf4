package rpc

import "slices"

// Extensions of zrepl's protocol that peers of this project announce in
// their banners. zrepl v0.7 announces none and ignores those it gets, so
// against a zrepl peer every one is off and the engine does without (see
// each one's comment for how); between two peers of this project all are on.
const (
	// extListing: listings carry each filesystem's versions with their
	// hold counts, its GUID and encryption properties, and the sender
	// job's marks, in the ListFilesystems reply. Without it the client
	// asks ListFilesystemVersions per filesystem and knows no encryption
	// properties, holds or marks.
	extListing = "zrepl.dev/listing-v1"
	// extErrors: a failed request's error carries its kinds (pb.ErrorInfo)
	// on data connections too. Without it the client gets the text only.
	extErrors = "zrepl.dev/errors-v1"
	// extReceive: the receive request names its step (from, full,
	// resuming), and the ZreplDevEndpoint service (AbortPartialReceive,
	// MoveLastReceivedHold) is served. Without it partial receive state is
	// cleared by the next receive request (ClearResumeToken), as zrepl's
	// client does, and a last-received hold is only moved by a receive.
	extReceive = "zrepl.dev/receive-v1"
)

// ourExtensions are the extensions this package speaks, in banner order.
var ourExtensions = []string{extListing, extErrors, extReceive}

// extSet is the set of extensions both sides of a connection speak.
type extSet struct{ listing, errors, receive bool }

// negotiate intersects the extensions the peer announced with those we
// announced; unknown ones (a newer peer's) are ignored.
func negotiate(theirs, ours []string) extSet {
	both := func(e string) bool { return slices.Contains(theirs, e) && slices.Contains(ours, e) }
	return extSet{listing: both(extListing), errors: both(extErrors), receive: both(extReceive)}
}

// zrepl reports whether the peer announced none of ours, as zrepl does.
func (e extSet) zrepl() bool { return e == extSet{} }

func ourBanner() banner { return banner{version: ProtocolVersion, extensions: ourExtensions} }
