// Package hfclient is a client of the Hugging Face Hub HTTP API, as the
// official clients (huggingface_hub, @huggingface/hub) use it, for
// huggingface.co or any compatible endpoint (heft's own `heft serve`): repo
// info and tree listings, ranged downloads from /resolve, repo creation,
// preupload, the Git LFS batch API with basic and multipart transfers and
// verify, and NDJSON commits. The wire rules, and why, are in
// shared/docs/hub-protocol.md; section numbers in comments (§2.3, …) refer
// to it.
//
// [Client] does the HTTP: every request is retried with exponential backoff
// and jitter on 408, 429 (honouring Retry-After and RateLimit), 5xx other than
// 501, and on connection resets and timeouts; downloads resume inside a range
// from the last byte received. Permanent failures (401, 403, 404 with
// RepoNotFound/RevisionNotFound/EntryNotFound, a bad Content-Range, a hash
// mismatch) stop at once with an [*Error] naming the repo and file; match
// them with errors.Is against [ErrRepoNotFound], [ErrRevisionNotFound],
// [ErrEntryNotFound], [ErrUnauthorized], [ErrForbidden].
//
// [Pull] and [Push] move a whole model between a Hub repo and a heft store:
// a pull fetches only the files the store lacks (by SHA-256 or git blob id),
// with several ranged GETs per large file, resumes an interrupted file from
// what the store already holds (store.IngestResumable), verifies every
// file's hash and commits once; a push uploads only what the server lacks
// (preupload, LFS batch) by streaming from the store, then commits once.
//
// Xet is never used (§5): downloads are plain GETs, uploads offer only
// "basic" and "multipart".
package hfclient
