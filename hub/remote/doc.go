// Package remote is the heft remote protocol: push and pull between heft stores
// over HTTP, moving only the objects the receiving store lacks, in the form they
// are stored (compressed, or delta-coded against a base chunk), so nothing is
// decoded and re-encoded on the way.
//
// [NewHandler] serves it under [PathPrefix] ("/heft/v1/"), next to the Hub API
// in `heft serve`; [Client] speaks it for `heft push REF NAME` and `heft pull
// NAME REF`. Both sides work on a [Store], a small interface declared here and
// implemented over *store.Store by internal/storeremote, so this package does not
// import store.
//
// # Objects
//
// A commit reaches, level by level: its manifest and its parent commits; the
// manifest's files; the files' tensors (and recipe tensors' input tensors); and
// the chunks that files (safetensors headers, blob pieces) and tensors (data)
// name. A chunk stored as a delta also needs its base chunk. Every object is named
// by the BLAKE3-256 of its decoded bytes, so a receiver verifies each one
// without trusting the sender: it decodes it, hashes it, and checks that a
// metadata object parses as its kind.
//
// A push sends, as git does, the whole history of the commit, but negotiates so
// that nothing the receiver has moves: a store answers for an object Absent,
// Incomplete (it has the object but not everything below it) or Complete, and
// the sender expands only what is not Complete.
//
// # Requests
//
// Every request is a POST to PathPrefix + endpoint + "?ref=NAME[:TAG]", with a
// bearer token (Authorization: Bearer …) checked by a hub.Authenticator before
// the body is read. Push endpoints need a write grant on the ref's namespace, pull
// endpoints a read grant (or Options.AnonymousRead); the namespace is the part of
// NAME before "/", and a NAME without one needs a grant on "*". JSON bodies are
// at most MaxJSONBody bytes, have no unknown fields, and carry ID lists as one
// base64 string of concatenated 32-byte IDs (at most MaxIDs per list); single
// IDs are 64 hex digits. Kinds (1 chunk, 2 tensor, 3 file, 4 manifest, 5 commit)
// and presences (0 absent, 1 incomplete, 2 complete) are strings of digits, one
// per ID of the list they go with.
//
// Push, client → server:
//
//	push/negotiate  {"new": C, "commits": [C and its ancestors], "old"?: O, "force"?: b}
//	             →  {"current": R, "updated": b, "status": "2210…"}
//	    The server answers the presence of each commit and the ref's current
//	    value R. If C is Complete it moves the ref at once (from O if given,
//	    else from R provided C fast-forwards it, unless force) and answers
//	    updated: a push of a model the remote has is this one round trip.
//	push/have       {"objects": [...], "kinds": "2223…"}  →  {"status": "0120…"}
//	    First for the manifests, files and tensors under the commits that are
//	    not Complete (the tensor level), then for the chunks, and the delta
//	    bases of the chunks, of the files and tensors that are not Complete.
//	push/objects    object stream  →  {"objects": n, "new": m, "stored_bytes": b}
//	    The missing objects in batches of at most MaxBatchBytes: delta bases in
//	    batches of their own first (a receiver decodes a delta against a base it
//	    has stored), then chunks, then tensors, files, manifests and commits,
//	    children before parents. The server verifies each object before it
//	    writes it and answers when the batch is durable (packs fsynced and
//	    indexed).
//	push/update     {"old": R, "new": C, "force"?: b}  →  {"updated": true}
//	    Under the store's writer lock (so gc cannot run in between) the server
//	    checks that C reaches only present objects (else 412), that R is an
//	    ancestor of C unless force (else 409), and compare-and-swaps the ref
//	    from R to C (409 if it moved: a concurrent push won; nothing is lost, the
//	    objects stay and a re-push under another name moves none of them).
//
// Pull, the mirror: the server lists, the client checks its own store.
//
//	pull/negotiate  {}  →  {"commit": C, "commits": [C and its ancestors]}
//	pull/trees      {"commits": [...]}  →  {"objects": [...], "kinds": "…"}
//	pull/chunks     {"objects": [files and tensors]}  →  {"chunks": [...], "deltas": [chunk, base, …]}
//	pull/objects    {"objects": [...]}  →  object stream
//	    The server streams the objects in the order asked until about
//	    Options.BatchBytes (at most MaxBatchBytes); the client asks again for the
//	    rest. It lists and sends only objects the ref's commit reaches.
//
// The client then moves its local ref by compare-and-swap from the value it had
// when the pull started, requiring a fast-forward unless forced.
//
// # Object streams
//
//	stream = "HEFTOBJ" 0x01, then one 56-byte header and its stored bytes per
//	         object, then an end header
//	header = object ID [32] | kind u8 | codec u8 | reserved u16 (0) |
//	         stored length u32 | raw length u64 | CRC-32C of the stored bytes u32 |
//	         CRC-32C of header bytes 0..52 u32        (little-endian)
//	end    = a header with kind 0, zero ID, codec, stored length and CRC, and
//	         the number of objects as the raw length
//
// Objects are at most MaxObjectBytes stored and decoded. The CRCs catch damage on
// the wire early; the receiver's BLAKE3 check is what makes a corrupted or forged
// object fail (HTTP 422) whatever its CRC says.
//
// # Interruptions
//
// A receiver keeps every object of a batch it received whole and verified, even
// when the stream is cut (the connection dropped, the client's context ended):
// they are made durable before the error is returned. A transfer run again
// negotiates again and moves only what is still missing; no object stored by an
// earlier attempt is sent twice. [ClientOptions.Retries] does this by itself
// for failures that may pass.
//
// # Possession
//
// For a push, an object counts as present only if the pusher could read it
// anyway (it is reachable from a ref in a namespace its token may read) or it was
// received for the ref's namespace within store.ReceivedGrace (an interrupted
// push resumes without sending it again). Knowing an ID is not proof of having
// the bytes: without this rule anyone who learned a commit ID could point a ref
// of their own at a model they may not read, and pull it. Presence answers, and
// the bases a received delta may name, are scoped the same way, so the answers
// tell a pusher nothing about objects outside its scope (a base it may not use
// is missing, 412, whether it exists or not). A pull lists and serves only
// objects the ref's commit reaches.
//
// # Errors
//
// Error responses are JSON {"error": message, "code": code} with 400 invalid,
// 401 unauthorized, 403 forbidden, 404 not_found, 409 conflict, 412 incomplete,
// 413 too_large, 422 integrity, 503 busy, 500 internal (the cause is logged, not
// shown). The client returns errors matching the package's Err* classes.
//
// # Counting
//
// [Client.Stats] counts the bytes that cross the client's connections (request
// and status lines, headers, bodies); [Transfer] reports them per push or pull
// with the objects and stored bytes moved.
package remote
