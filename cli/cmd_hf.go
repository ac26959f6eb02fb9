package cli

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/hub/hfclient"
	"github.com/heft-dev/heft/store"
)

// Pull from and push to a Hugging Face Hub endpoint (hf:// sources and
// targets of `heft pull` and `heft push`, see cmd_remote.go). The endpoint is
// HF_ENDPOINT (default https://huggingface.co); the token HF_TOKEN, else the
// token file huggingface_hub uses. The work is hfclient.Pull and
// hfclient.Push; this file parses the arguments and prints the summary.

// hfPull pulls source ("hf://ORG/NAME[@REV]") into the store and commits it to
// name (NAME[:TAG]; "" means ORG/NAME:main). Files the store has cost
// nothing; an interrupted pull resumes where the store's data ends.
func hfPull(c *cli.Context, e *env, s *store.Store, source, name string) error {
	repo, rev, err := hfclient.ParseURI(source)
	if err != nil {
		return usagef("%v", err)
	}
	ref := store.RefName{Name: repo, Tag: store.DefaultTag}
	if name != "" {
		if ref, err = store.ParseRef(name); err != nil {
			return err
		}
	}
	client, err := hfclient.NewFromEnv(hfclient.Options{UserAgent: "heft/" + store.Version})
	if err != nil {
		return err
	}
	progress, done := e.bar("pull " + repo)
	res, err := hfclient.Pull(c.Context, client, s, hfclient.PullOptions{
		Repo: repo, Revision: rev, Ref: ref, Message: c.String("message"), Progress: progress,
	})
	done()
	if err != nil {
		return hfError(err)
	}
	if e.json {
		return e.printJSON(res)
	}
	if res.UpToDate {
		fmt.Fprintf(e.stdout, "%s %s is up to date with %s\n", res.Commit, res.Ref, res.Source)
	} else {
		fmt.Fprintf(e.stdout, "%s %s from %s\n", res.Commit, res.Ref, res.Source)
	}
	resumed := ""
	if res.ResumedFiles > 0 {
		resumed = fmt.Sprintf(", %d resumed (%s not fetched again)", res.ResumedFiles, humanBytes(res.ResumedBytes))
	}
	fmt.Fprintf(e.stdout, "%d files: %d downloaded%s, %d already stored (%s)\n",
		res.Files, res.DownloadedFiles, resumed, res.SkippedFiles, humanBytes(res.SkippedBytes))
	fmt.Fprintf(e.stdout, "fetched %s of %s logical (%s), %s newly stored, in %.1fs\n",
		humanBytes(res.FetchedBytes), humanBytes(res.LogicalBytes), percent(res.FetchedBytes, res.LogicalBytes),
		humanBytes(res.StoredBytes), res.Seconds)
	return nil
}

// hfPush pushes ref (NAME[:TAG] or a commit) to target ("hf://ORG/NAME[@BRANCH]",
// default branch main) in one commit, uploading only what the server lacks.
// The repo is created if needed.
func hfPush(c *cli.Context, e *env, s *store.Store, ref, target string) error {
	repo, rev, err := hfclient.ParseURI(target)
	if err != nil {
		return usagef("%v", err)
	}
	client, err := hfclient.NewFromEnv(hfclient.Options{UserAgent: "heft/" + store.Version})
	if err != nil {
		return err
	}
	progress, done := e.bar("push " + repo)
	res, err := hfclient.Push(c.Context, client, s, hfclient.PushOptions{
		Repo: repo, Revision: rev, Ref: ref, Message: c.String("message"), Private: c.Bool("private"), Progress: progress,
	})
	done()
	if err != nil {
		return hfError(err)
	}
	if e.json {
		return e.printJSON(res)
	}
	dest := fmt.Sprintf("%s%s@%s", hfclient.URIScheme, res.Repo, res.Revision)
	if res.UpToDate {
		fmt.Fprintf(e.stdout, "%s %s is up to date with %s\n", res.Commit, dest, res.Ref)
	} else {
		fmt.Fprintf(e.stdout, "%s %s from %s (%s)\n", res.Commit, dest, res.Ref, res.Source.Short())
	}
	if res.Created {
		fmt.Fprintf(e.stdout, "created %s\n", res.Repo)
	}
	fmt.Fprintf(e.stdout, "%d files: %d unchanged, %d uploaded (%s), %d already on the server, %d inline (%s) in %.1fs\n",
		res.Files, res.Unchanged, res.UploadedObjects, humanBytes(res.UploadedBytes), res.PresentObjects,
		res.InlineFiles, humanBytes(res.InlineBytes), res.Seconds)
	for _, p := range res.Ignored {
		e.info("skipped %s: excluded by the repo's .gitignore", p)
	}
	return nil
}

// hfError maps the client's permanent request errors to exit code 1 (a repo,
// revision or file that does not exist, a token that is missing or lacks the
// permission: the caller's input); the rest (network, server, content that
// does not match its hash) stay operational failures (2).
func hfError(err error) error {
	for _, class := range []error{hfclient.ErrRepoNotFound, hfclient.ErrRevisionNotFound, hfclient.ErrEntryNotFound, hfclient.ErrUnauthorized, hfclient.ErrForbidden} {
		if errors.Is(err, class) {
			return hfInputError{err}
		}
	}
	return err
}

// hfInputError is an input error (exit 1) whose message is the client's.
type hfInputError struct{ err error }

func (h hfInputError) Error() string { return h.err.Error() }
func (h hfInputError) Unwrap() error { return h.err }

// ExitCode makes ExitCode (app.go) classify it as an input error.
func (h hfInputError) ExitCode() int { return ExitInput }
