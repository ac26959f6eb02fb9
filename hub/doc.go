// Package hub speaks the Hugging Face Hub HTTP protocol, so that heft can stand
// in for huggingface.co as an HF_ENDPOINT (`heft serve`).
//
// [NewHandler] returns a [Handler] that answers what huggingface_hub (0.3x,
// 1.x, 2.x), @huggingface/hub and hf_transfer call. The wire rules it
// follows, and why, are in shared/docs/hub-protocol.md; section numbers in
// comments (§2.1, …) refer to it.
//
// Read side: repo and revision info, tree listings, paths-info, resolve
// (HEAD and GET, with Range), raw, model listing and whoami-v2, through
// [Repos], a small interface declared here (the store implements it through
// an adapter, so this package does not import store). File bytes are
// streamed from [FileReader] through an io.SectionReader; nothing is ever
// staged whole in memory or on disk.
//
// Write side, when [Options.Writer] is set: POST /api/repos/create, DELETE
// /api/repos/delete, preupload, the Git LFS batch API with basic and
// multipart uploads to URLs the server signs itself (signing.go), NDJSON
// (and JSON) commits, branches, tags and validate-yaml. The store side is
// [Writer]: objects are stored (verified, durable, invisible) first and
// become visible only through an atomic, compare-and-swap commit. Uploads
// stream into Writer.StoreObject; only the parts of a multipart upload are
// staged on disk (staging.go), under a size cap. Xet is never offered, so
// clients stay on plain LFS (§5): huggingface_hub 0.36–1.19 negotiate and
// get "basic"; 1.20 and later need HF_HUB_DISABLE_XET=1.
//
// Authentication: [Options.Tokens] (an [Authenticator]; [TokenStore] keeps
// hashed tokens in a file) turns on bearer tokens with read or write
// [Grant]s per namespace; every request is authorized against them, and
// anonymous reads are off unless [Options.AnonymousRead]. [Options.Auth]
// remains as a middleware hook that may attach identities itself.
//
// Every request gets one slog record (route, status, bytes, duration, user)
// and Prometheus metrics on GET /metrics, in a registry of the handler's
// own. [Serve] runs a handler with graceful shutdown. Package hubtest holds
// an in-memory Repos and Writer and the conformance checks CheckRepos and
// CheckWriter that any implementation can run.
package hub
