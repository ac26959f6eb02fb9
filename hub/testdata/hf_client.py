"""Drives the real huggingface_hub client against a heft hub server.

Run by interop_test.go as `python hf_client.py MODE CONFIG_JSON`, with
HF_ENDPOINT pointing at the server (online, upload, fetch) or HF_HUB_OFFLINE=1
(offline); upload and fetch authenticate with HF_TOKEN. It prints one JSON
document on stdout; the Go test checks it. Nothing here asserts: the Go side
knows what the server holds.
"""

import hashlib
import json
import os
import sys

import huggingface_hub as hf
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_hashes(root):
    """sha256 of every file under root, by slash path (symlinks followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".cache"]
        for name in filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = sha256(full)
    return out


def error_name(fn):
    try:
        fn()
    except (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError) as e:
        # Report the most specific of the classes the test expects.
        for cls in (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError):
            if isinstance(e, cls):
                return cls.__name__
    except Exception as e:  # noqa: BLE001 - the test reports whatever it was
        return "unexpected " + type(e).__name__ + ": " + str(e)[:300]
    return "no error"


def online(cfg):
    repo = cfg["repo"]
    api = HfApi()
    out = {"version": hf.__version__}

    # First download of the weights: the server cuts the body half way
    # (injected store failure); the client must resume with a Range request,
    # within the call (1.x+) or on the next call from the .incomplete blob
    # (0.x). Done first so that it is the first GET of the file.
    attempts, errors = 0, []
    path = None
    for _ in range(3):
        attempts += 1
        try:
            path = hf_hub_download(repo, "model.safetensors", cache_dir=cfg["cache_resume"])
            break
        except Exception as e:  # noqa: BLE001
            errors.append(type(e).__name__ + ": " + str(e)[:200])
    out["resume"] = {"sha256": sha256(path) if path else None, "attempts": attempts, "errors": errors}

    info = api.model_info(repo)
    out["info_sha"] = info.sha
    out["info_siblings"] = sorted(s.rfilename for s in info.siblings)
    out["feature_sha"] = api.model_info(repo, revision="feature/x").sha
    out["files"] = sorted(api.list_repo_files(repo))
    out["tree_a"] = sorted(
        ("dir:" if type(e).__name__ == "RepoFolder" else "file:") + e.path
        for e in api.list_repo_tree(repo, path_in_repo="a", recursive=True)
    )

    snap = snapshot_download(repo, cache_dir=cfg["cache"])
    out["snapshot"] = {"path": snap, "files": tree_hashes(snap)}
    snap_x = snapshot_download(repo, revision="feature/x", cache_dir=cfg["cache"])
    out["snapshot_feature"] = {"path": snap_x, "files": tree_hashes(snap_x)}
    blobs = os.path.join(cfg["cache"], "models--" + repo.replace("/", "--"), "blobs")
    out["blobs"] = sorted(os.listdir(blobs))

    p = hf_hub_download(repo, "tokenizer/tokenizer.json", revision="feature/x", cache_dir=cfg["cache_single"])
    out["single"] = {"path": p, "sha256": sha256(p)}

    # hf_transfer (0.x only): parallel ranged GETs, each written at its
    # offset whatever the status, so a server that ignores Range corrupts
    # the file (hub-protocol.md §2.3).
    out["hf_transfer"] = None
    try:
        import hf_transfer
        from huggingface_hub import constants
    except ImportError:
        pass
    else:
        if hasattr(constants, "HF_HUB_ENABLE_HF_TRANSFER") and hf.__version__.startswith("0."):
            constants.HF_HUB_ENABLE_HF_TRANSFER = True
            try:
                # Only files over 50 MiB go through hf_transfer.
                p = hf_hub_download(repo, "big.safetensors", revision="big", cache_dir=cfg["cache_transfer"])
            finally:
                constants.HF_HUB_ENABLE_HF_TRANSFER = False
            version = getattr(hf_transfer, "__version__", "installed")
            out["hf_transfer"] = {"version": version, "sha256": sha256(p)}

    meta = api.get_safetensors_metadata(repo)
    out["safetensors_tensors"] = sorted(
        name for fm in meta.files_metadata.values() for name in fm.tensors
    )

    out["err_missing_file"] = error_name(lambda: hf_hub_download(repo, "missing.json", cache_dir=cfg["cache"]))
    no_exist = os.path.join(cfg["cache"], "models--" + repo.replace("/", "--"), ".no_exist", info.sha, "missing.json")
    out["no_exist_cached"] = os.path.exists(no_exist)
    out["err_bad_revision"] = error_name(lambda: hf_hub_download(repo, "config.json", revision="nope", cache_dir=cfg["cache"]))
    out["err_bad_repo"] = error_name(lambda: hf_hub_download("acme/nope", "config.json", cache_dir=cfg["cache"]))
    out["err_bad_repo_info"] = error_name(lambda: api.model_info("acme/nope"))
    return out


def offline(cfg):
    repo = cfg["repo"]
    out = {"version": hf.__version__}
    snap = snapshot_download(repo, cache_dir=cfg["cache"])
    out["snapshot"] = {"path": snap, "files": tree_hashes(snap)}
    snap_x = snapshot_download(repo, revision="feature/x", cache_dir=cfg["cache"])
    out["snapshot_feature"] = {"path": snap_x, "files": tree_hashes(snap_x)}
    p = hf_hub_download(repo, "config.json", cache_dir=cfg["cache"])
    out["single"] = {"path": p, "sha256": sha256(p)}
    return out


def http_status(fn):
    """The HTTP status of the HfHubHTTPError fn raises, or an explanation."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        fn()
    except HfHubHTTPError as e:
        return e.response.status_code
    except Exception as e:  # noqa: BLE001
        return "unexpected " + type(e).__name__ + ": " + str(e)[:300]
    return "no error"


def upload(cfg):
    """The write API: create_repo, upload_folder, upload_file, a stale
    parent_commit, create_branch, create_tag, delete_file, delete_repo."""
    from huggingface_hub import CommitOperationAdd

    repo = cfg["repo"]
    api = HfApi()
    out = {"version": hf.__version__}
    out["whoami"] = api.whoami()["name"]

    url = api.create_repo(repo)
    out["create_url"] = str(url)
    out["create_repo_id"] = url.repo_id
    out["create_again_repo_id"] = api.create_repo(repo, exist_ok=True).repo_id
    out["create_conflict"] = http_status(lambda: api.create_repo(repo))

    info = api.upload_folder(folder_path=cfg["folder"], repo_id=repo, commit_message="upload folder")
    out["folder_commit"] = info.oid
    out["folder_commit_url"] = info.commit_url
    # Unchanged files are skipped (preupload oids), so a second identical
    # upload_folder makes no commit. (The .gitignore'd file is left out on
    # the client side here: Python keeps an ignored file among the
    # operations, and would make an empty commit for it.)
    again = api.upload_folder(
        folder_path=cfg["folder"], repo_id=repo, commit_message="same again", ignore_patterns=["*.log"]
    )
    out["folder_again_commit"] = again.oid

    info = api.upload_file(path_or_fileobj=b"notes\n", path_in_repo="extra/notes.txt", repo_id=repo, commit_message="add notes")
    out["file_commit"] = info.oid
    out["stale_parent"] = http_status(
        lambda: api.create_commit(
            repo,
            operations=[CommitOperationAdd(path_in_repo="stale.txt", path_or_fileobj=b"stale")],
            commit_message="stale parent",
            parent_commit=out["folder_commit"],
        )
    )

    api.create_branch(repo, branch="dev")
    api.create_branch(repo, branch="dev", exist_ok=True)
    out["branch_conflict"] = http_status(lambda: api.create_branch(repo, branch="dev"))
    api.create_tag(repo, tag="v1.0", revision=out["folder_commit"])
    out["tag_conflict"] = http_status(lambda: api.create_tag(repo, tag="v1.0"))
    out["dev_sha"] = api.model_info(repo, revision="dev").sha
    out["tag_sha"] = api.model_info(repo, revision="v1.0").sha

    info = api.delete_file("extra/notes.txt", repo_id=repo, commit_message="delete notes")
    out["delete_commit"] = info.oid
    out["delete_missing"] = error_name(lambda: api.delete_file("extra/notes.txt", repo_id=repo))

    tmp = repo + "-tmp"
    api.create_repo(tmp)
    api.delete_repo(tmp)
    api.delete_repo(tmp, missing_ok=True)
    out["deleted_repo_info"] = error_name(lambda: api.model_info(tmp))
    out["main_sha"] = api.model_info(repo).sha
    return out


def fetch(cfg):
    """Download every revision the test wrote, into a fresh cache."""
    repo = cfg["repo"]
    out = {"version": hf.__version__, "revisions": {}}
    for rev in cfg["revisions"]:
        snap = snapshot_download(repo, revision=rev, cache_dir=cfg["cache"])
        out["revisions"][rev] = tree_hashes(snap)
    return out


if __name__ == "__main__":
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    result = {"online": online, "offline": offline, "upload": upload, "fetch": fetch}[mode](cfg)
    json.dump(result, sys.stdout)
