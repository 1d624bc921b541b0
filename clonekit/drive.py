"""Google Drive for the notebooks: one folder API over a local folder, a mounted Drive, or pydrive2.

Colab deletes its disk on every disconnect, so every stage keeps a copy of
what it made on Drive: the dataset, each checkpoint as it is saved, the
adapter, the loss history, the GGUF files. Re-running a notebook pulls back
what is missing and training resumes from the newest checkpoint on Drive.

Three backends, one API (`DriveFolder`: list, exists, upload_file, upload_dir,
download_file, download_dir, delete):
  - `PyDrive2Folder`: the Drive v2 API through pydrive2, authenticated with
    Colab's own login (`google.colab.auth`), no client_secrets.json needed;
  - `LocalFolder` on `/content/drive/MyDrive/...` after `drive.mount` (the
    fallback), or on any local folder;
  - for tests and nbmake, `PyDrive2Folder` against a loopback stand-in of the
    Drive API (`clonekit.drive_standin`): mode "standin", or "auto" with
    CLONEKIT_DRIVE_STANDIN=1 or CLONEKIT_SMALL=1 off Colab (see `use_standin`).

The seam into pydrive2: `GoogleAuth.credentials` accepts any object with
oauth2client's face (`access_token_expired`, `authorize(http)`, `refresh`,
`set_store`), and `GoogleAuth.service` any googleapiclient Drive v2 service.
`connect_pydrive2` fills both: credentials from google-auth wrapped in
`GoogleAuthCredentials`, the service built with `build_from_document` from the
Drive v2 discovery document that googleapiclient ships, its `rootUrl`
replaced when a stand-in is used. pydrive2's own code then runs unchanged.

Run as (in a notebook): folder = connect("auto"); folder.upload_dir(work / "data", "data")
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from . import storage
from .errors import DependencyError, InputError

try:  # a plain base class when transformers is absent keeps `import clonekit.drive` light
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object  # type: ignore[misc,assignment]

FOLDER_MIME = "application/vnd.google-apps.folder"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
MOUNT_POINT = "/content/drive"
LAST_IN_CHECKPOINT = "trainer_state.json"  # uploaded last: its presence on Drive means the checkpoint is complete


def md5_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _parts(rel: str) -> list[str]:
    return [p for p in str(rel).replace("\\", "/").split("/") if p and p != "."]


def _upload_order(files: list[str]) -> list[str]:
    """Checkpoint marker files go last, so a half-uploaded checkpoint never looks complete."""
    return sorted(files, key=lambda f: (f.rsplit("/", 1)[-1] == LAST_IN_CHECKPOINT, f))


def _progress(items: list, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False, disable=len(items) < 2)


class DriveFolder:
    """A folder on Drive (or a stand-in for it); paths inside it are relative, with '/'."""

    def describe(self) -> str:
        raise NotImplementedError

    def entries(self, rel: str = "") -> dict[str, dict[str, Any]]:
        """Name -> {"dir": bool, "size": int, "md5": str|None, ...} directly inside `rel` ({} if missing)."""
        raise NotImplementedError

    def upload_file(self, local: str | Path, rel: str) -> bool:
        """Copy one file up; False when an identical file is already there (nothing sent)."""
        raise NotImplementedError

    def download_file(self, rel: str, local: str | Path, info: dict[str, Any] | None = None) -> Path:
        """Copy one file down (atomically); `info` is its entry when the caller already has it."""
        raise NotImplementedError

    def delete(self, rel: str) -> bool:
        """Remove a file or a whole folder; False if it was not there."""
        raise NotImplementedError

    # ---- generic, built on the four above
    def list(self, rel: str = "") -> list[str]:
        return sorted(self.entries(rel))

    def exists(self, rel: str) -> bool:
        parts = _parts(rel)
        return not parts or parts[-1] in self.entries("/".join(parts[:-1]))

    def walk(self, rel: str = "") -> dict[str, dict[str, Any]]:
        """Every file under `rel` (path relative to it -> its entry), sorted."""
        out = {}
        for name, info in self.entries(rel).items():
            if info["dir"]:
                out.update({f"{name}/{sub}": i for sub, i in self.walk(f"{rel}/{name}").items()})
            else:
                out[name] = info
        return dict(sorted(out.items()))

    def upload_dir(self, local_dir: str | Path, rel: str, skip: Callable[[str], bool] | None = None) -> int:
        """Mirror a local folder up (unchanged files skipped); returns how many files were sent."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise InputError(f"{local_dir} is not a folder; nothing to upload. Run the stage that writes it first.")
        files = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        files = [f for f in files if not (skip and skip(f))]
        sent = 0
        for f in _progress(_upload_order(files), f"upload {rel}"):
            sent += self.upload_file(local_dir / f, f"{rel}/{f}")
        return sent

    def download_dir(self, rel: str, local_dir: str | Path, skip: Callable[[str], bool] | None = None) -> int:
        """Copy a Drive folder down (files already identical locally are skipped); returns how many were fetched."""
        local_dir = Path(local_dir)
        files = {f: i for f, i in self.walk(rel).items() if not (skip and skip(f))}
        if not files and not self.exists(rel):
            raise InputError(f"{self.describe()}/{rel} does not exist on Drive. Upload it first, or run the stage that makes it.")
        got = 0
        for f in _progress(_upload_order(list(files)), f"download {rel}"):
            dest, info = local_dir / f, files[f]
            if dest.exists() and dest.stat().st_size == info.get("size") and (
                    (info.get("md5") and md5_file(dest) == info["md5"]) or (info.get("mtime") and dest.stat().st_mtime >= info["mtime"])):
                continue
            self.download_file(f"{rel}/{f}", dest, info)
            got += 1
        return got


class LocalFolder(DriveFolder):
    """A plain folder: the mounted Drive (`/content/drive/MyDrive/clonekit`) or any local path."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def entries(self, rel: str = "") -> dict[str, dict[str, Any]]:
        folder = self.root.joinpath(*_parts(rel))
        if not folder.is_dir():
            return {}
        return {p.name: {"dir": p.is_dir(), "size": p.stat().st_size if p.is_file() else 0, "md5": None, "mtime": p.stat().st_mtime}
                for p in folder.iterdir() if not p.name.endswith(".tmp")}

    def upload_file(self, local: str | Path, rel: str) -> bool:
        src, dest = Path(local), self.root.joinpath(*_parts(rel))
        if dest.exists() and dest.stat().st_size == src.stat().st_size and dest.stat().st_mtime >= src.stat().st_mtime:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # a disconnect mid-copy leaves only a .tmp
        return True

    def download_file(self, rel: str, local: str | Path, info: dict[str, Any] | None = None) -> Path:
        src, dest = self.root.joinpath(*_parts(rel)), Path(local)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest

    def delete(self, rel: str) -> bool:
        path = self.root.joinpath(*_parts(rel))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            return False
        return True


class PyDrive2Folder(DriveFolder):
    """A folder in My Drive, through pydrive2 (Drive v2 API). Folder ids are cached per path."""

    def __init__(self, drive, root_id: str, label: str = "Drive"):
        self.drive = drive  # pydrive2.drive.GoogleDrive
        self.root_id = root_id
        self.label = label
        self._ids: dict[str, str] = {"": root_id}

    def describe(self) -> str:
        return self.label

    def _children(self, folder_id: str, title: str | None = None) -> list:
        q = f"'{folder_id}' in parents and trashed = false"
        if title is not None:
            q += " and title = '" + title.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return self.drive.ListFile({"q": q}).GetList()  # no maxResults: pydrive2 then follows every page

    def _folder_id(self, rel: str, create: bool = False) -> str | None:
        parts = _parts(rel)
        key = "/".join(parts)
        if key in self._ids:
            return self._ids[key]
        parent = self._folder_id("/".join(parts[:-1]), create)
        if parent is None:
            return None
        found = [f for f in self._children(parent, parts[-1]) if f["mimeType"] == FOLDER_MIME]
        if found:
            fid = found[0]["id"]
        elif create:
            f = self.drive.CreateFile({"title": parts[-1], "mimeType": FOLDER_MIME, "parents": [{"id": parent}]})
            f.Upload()
            fid = f["id"]
        else:
            return None
        self._ids[key] = fid
        return fid

    def _file(self, rel: str):
        parts = _parts(rel)
        parent = self._folder_id("/".join(parts[:-1]))
        if parent is None:
            return None
        found = [f for f in self._children(parent, parts[-1]) if f["mimeType"] != FOLDER_MIME]
        return found[0] if found else None

    def entries(self, rel: str = "") -> dict[str, dict[str, Any]]:
        fid = self._folder_id(rel)
        if fid is None:
            return {}
        out = {}
        for f in self._children(fid):
            is_dir = f["mimeType"] == FOLDER_MIME
            out[f["title"]] = {"dir": is_dir, "size": int(f.get("fileSize") or 0), "md5": f.get("md5Checksum"), "id": f["id"]}
            if is_dir:
                self._ids["/".join(_parts(rel) + [f["title"]])] = f["id"]
        return out

    def upload_file(self, local: str | Path, rel: str) -> bool:
        local = Path(local)
        parts = _parts(rel)
        existing = self._file(rel)
        if existing is not None and existing.get("md5Checksum") == md5_file(local):
            return False
        if existing is None:
            parent = self._folder_id("/".join(parts[:-1]), create=True)
            existing = self.drive.CreateFile({"title": parts[-1], "parents": [{"id": parent}]})
        existing.SetContentFile(str(local))
        try:
            existing.Upload()  # insert or update; always a resumable upload
        finally:
            existing.content.close()  # pydrive2 leaves the file open
        return True

    def download_file(self, rel: str, local: str | Path, info: dict[str, Any] | None = None) -> Path:
        f = self.drive.CreateFile({"id": info["id"]}) if info and info.get("id") else self._file(rel)
        if f is None:
            raise InputError(f"{self.label}/{rel} is not on Drive. Upload it first.")
        dest = Path(local)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        f.GetContentFile(str(tmp))
        os.replace(tmp, dest)
        return dest

    def delete(self, rel: str) -> bool:
        parts = _parts(rel)
        entry = self.entries("/".join(parts[:-1])).get(parts[-1])
        if entry is None:
            return False
        self.drive.CreateFile({"id": entry["id"]}).Delete()  # permanent: old checkpoints must not fill the 15 GB quota
        for key in [k for k in self._ids if k == "/".join(parts) or k.startswith("/".join(parts) + "/")]:
            del self._ids[key]
        return True


# ---------------------------------------------------------------- connecting


class GoogleAuthCredentials:
    """google-auth credentials with the oauth2client face that pydrive2 expects.

    Colab's login gives google-auth credentials; pydrive2 was written for
    oauth2client's. Wrapping them (rather than using the deprecated
    `GoogleCredentials.get_application_default()`) means a token that expires
    after an hour is refreshed here instead of pydrive2 falling back to a
    browser login that asks for client_secrets.json.
    """

    def __init__(self, credentials):
        self.credentials = credentials

    @property
    def access_token_expired(self) -> bool:
        if not self.credentials.valid:
            self.refresh(None)
        return not self.credentials.valid

    def refresh(self, http) -> None:
        from google.auth.transport.requests import Request

        self.credentials.refresh(Request())

    def authorize(self, http):
        from google_auth_httplib2 import AuthorizedHttp

        return AuthorizedHttp(self.credentials, http=http)

    def set_store(self, store) -> None:  # pydrive2 calls it after a login; nothing to store
        pass


def drive_v2_document(root_url: str | None = None) -> dict[str, Any]:
    """The Drive v2 discovery document googleapiclient ships, optionally pointed at another host."""
    import json

    from googleapiclient.discovery_cache import get_static_doc

    doc = json.loads(get_static_doc("drive", "v2"))
    if root_url:
        doc["rootUrl"] = root_url if root_url.endswith("/") else root_url + "/"
        doc["baseUrl"] = doc["rootUrl"] + doc["servicePath"]
    return doc


def connect_pydrive2(credentials, root_url: str | None = None, http_timeout: int = 120):
    """A pydrive2 `GoogleDrive` using these google-auth credentials (no client_secrets.json, no browser)."""
    try:
        from googleapiclient.discovery import build_from_document
        from pydrive2.auth import GoogleAuth
        from pydrive2.drive import GoogleDrive
    except ImportError as e:
        raise DependencyError(f"Google Drive through pydrive2 needs clonekit[colab]: pip install 'clonekit[colab]' ({e.name} is missing)") from e
    gauth = GoogleAuth(settings_file=None, settings=dict(GoogleAuth.DEFAULT_SETTINGS), http_timeout=http_timeout)
    gauth.credentials = GoogleAuthCredentials(credentials)
    gauth.http = gauth.Get_Http_Object()
    gauth.service = build_from_document(drive_v2_document(root_url), http=gauth.http)
    return GoogleDrive(gauth)


def open_pydrive2_folder(drive, name: str = "clonekit", parent_id: str = "root", label: str | None = None) -> PyDrive2Folder:
    """The folder `name` in My Drive (created if needed)."""
    top = PyDrive2Folder(drive, parent_id, label="My Drive")
    fid = top._folder_id(name, create=True)
    return PyDrive2Folder(drive, fid, label=label or f"My Drive/{name}")


def colab_credentials():
    """Log in with Colab's own dialog and return google-auth credentials for Drive."""
    import google.auth
    from google.colab import auth  # type: ignore[import-not-found]

    auth.authenticate_user()
    creds, _ = google.auth.default(scopes=[DRIVE_SCOPE])
    return creds


_STANDIN = None


def standin_folder(store_dir: str | Path | None = None, name: str = "clonekit") -> PyDrive2Folder:
    """A PyDrive2Folder on a loopback Drive stand-in whose files persist in `store_dir`."""
    global _STANDIN
    from google.oauth2.credentials import Credentials

    from .drive_standin import start_standin

    store_dir = Path(store_dir or os.environ.get("CLONEKIT_DRIVE_STANDIN_DIR") or storage.work_dir() / ".drive_standin")
    if _STANDIN is None or _STANDIN.store.folder != store_dir:
        if _STANDIN is not None:
            _STANDIN.stop()
        _STANDIN = start_standin(store_dir)
    drive = connect_pydrive2(Credentials(token=_STANDIN.token), root_url=_STANDIN.root_url)
    return open_pydrive2_folder(drive, name, label=f"Drive stand-in {_STANDIN.root_url} /{name}")


def use_standin() -> bool:
    """Whether "auto" means the loopback stand-in: CLONEKIT_DRIVE_STANDIN=1, or CLONEKIT_SMALL off Colab (tests, nbmake).

    CLONEKIT_DRIVE_STANDIN=0 turns it off even under CLONEKIT_SMALL.
    """
    from .colab import small_mode

    flag = os.environ.get("CLONEKIT_DRIVE_STANDIN", "")
    return flag == "1" or (flag != "0" and small_mode() and not storage.is_colab())


def connect(mode: str = "auto", name: str = "clonekit") -> DriveFolder | None:
    """The Drive folder every stage copies its results to, or None (no Drive: results stay local).

    mode: "auto" (on Colab pydrive2, then `drive.mount` if that fails; the
    loopback stand-in when `use_standin()`; elsewhere $CLONEKIT_DRIVE_DIR or
    none), "pydrive2", "mount", "standin", "none", or a local folder path.
    """
    if mode == "none":
        return None
    if mode == "standin" or (mode == "auto" and use_standin()):
        folder: DriveFolder = standin_folder(name=name)
    elif mode in ("pydrive2", "auto") and storage.is_colab():
        try:
            folder = open_pydrive2_folder(connect_pydrive2(colab_credentials()), name)
        except Exception as e:  # any login or API failure: the mount still works for most people
            print(f"pydrive2 login failed ({type(e).__name__}: {e}); mounting Drive instead")
            return connect("mount", name)
    elif mode == "mount":
        try:
            from google.colab import drive as colab_drive  # type: ignore[import-not-found]
        except ImportError as e:
            raise InputError("drive mode 'mount' works only on Colab; here use a folder path, 'none' or 'standin'.") from e
        colab_drive.mount(MOUNT_POINT)
        folder = LocalFolder(Path(MOUNT_POINT) / "MyDrive" / name)
    elif mode == "auto":
        if not os.environ.get("CLONEKIT_DRIVE_DIR"):
            print("No Google Drive here (not on Colab): results stay in the local work folder.")
            return None
        folder = LocalFolder(os.environ["CLONEKIT_DRIVE_DIR"])
    elif mode == "pydrive2":
        raise InputError("drive mode 'pydrive2' needs Colab's login; outside Colab use a folder path, 'none' or 'standin'.")
    else:
        folder = LocalFolder(mode)
    print(f"Drive folder: {folder.describe()}")
    return folder


# ---------------------------------------------------------------- runs and stages


def remote_checkpoints(folder: DriveFolder, remote_run: str = "clone") -> list[str]:
    """Complete checkpoints on Drive (those holding trainer_state.json), oldest first."""
    found = []
    for name, info in folder.entries(f"{remote_run}/checkpoints").items():
        m = storage._CKPT.match(name)
        if m and info["dir"] and LAST_IN_CHECKPOINT in folder.entries(f"{remote_run}/checkpoints/{name}"):
            found.append((int(m.group(1)), name))
    return [n for _, n in sorted(found)]


def prune_checkpoints(folder: DriveFolder, keep: int, remote_run: str = "clone") -> list[str]:
    """Delete the oldest checkpoints on Drive beyond `keep` (and any half-uploaded older one)."""
    complete = remote_checkpoints(folder, remote_run)
    newest = set(complete[-keep:]) if keep > 0 else set()
    last = int(complete[-1].split("-")[1]) if complete else -1
    gone = []
    for name in folder.entries(f"{remote_run}/checkpoints"):
        m = storage._CKPT.match(name)
        stale_partial = m and name not in complete and int(m.group(1)) < last
        if (name in complete and name not in newest) or stale_partial:
            folder.delete(f"{remote_run}/checkpoints/{name}")
            gone.append(name)
    return gone


def upload_checkpoint(folder: DriveFolder, checkpoint: str | Path, remote_run: str = "clone") -> int:
    checkpoint = Path(checkpoint)
    return folder.upload_dir(checkpoint, f"{remote_run}/checkpoints/{checkpoint.name}")


def sync_run_to_drive(run_dir: str | Path, folder: DriveFolder, remote_run: str = "clone", keep: int | None = None) -> int:
    """Upload a run folder (adapter, configs, loss history, plot, checkpoints); old remote checkpoints pruned.

    Returns the number of files sent (unchanged ones are skipped).
    """
    run = storage.run_paths(run_dir)
    if not run.root.is_dir():
        raise InputError(f"{run.root} does not exist; train first.")
    sent = folder.upload_dir(run.root, remote_run, skip=lambda f: f.startswith("checkpoints/"))
    ckpts = storage.list_checkpoints(run.checkpoints)
    keep = keep if keep is not None else max(1, len(ckpts))
    for ckpt in ckpts[-keep:]:
        sent += upload_checkpoint(folder, ckpt, remote_run)
    prune_checkpoints(folder, keep, remote_run)
    return sent


# settings a checkpoint can only be resumed with (model shape, data order, schedule)
RESUME_KEYS = ("base_model", "lora_r", "lora_alpha", "target_modules", "micro_batch_size", "gradient_accumulation_steps",
               "max_seq_length", "epochs", "max_steps", "learning_rate", "lr_scheduler", "seed", "train_on_inputs")


def config_changes(saved: dict[str, Any], config) -> list[str]:
    """The RESUME_KEYS whose value in `config` differs from a run's saved train_config.json."""
    return [f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in RESUME_KEYS if k in saved and saved[k] != getattr(config, k, saved[k])]


def restore_run_from_drive(folder: DriveFolder | None, run_dir: str | Path, remote_run: str = "clone", config=None,
                           start_over: bool = False) -> Path | None:
    """Bring the newest checkpoint on Drive (and the run's small files) into `run_dir`; return the checkpoint to resume.

    Nothing is downloaded when the local run already has that checkpoint or a
    newer one; without Drive (folder None) this is the newest local checkpoint.
    With `config` (the TrainConfig about to run), a run trained with other
    settings (locally or on Drive) is refused with an InputError: resuming it
    would mix two runs. `start_over=True` deletes the old run's checkpoints
    (local and on Drive) and returns None: training starts from scratch.
    """
    run = storage.run_paths(run_dir)
    if start_over:
        shutil.rmtree(run.checkpoints, ignore_errors=True)
        run.history.unlink(missing_ok=True)
        if folder is not None and folder.delete(remote_run):
            print(f"deleted the old run {folder.describe()}/{remote_run}")
        return None
    local = storage.latest_checkpoint(run.checkpoints)
    remote = remote_checkpoints(folder, remote_run) if folder is not None else []
    if config is not None:
        saved = None
        if remote and "train_config.json" in folder.entries(remote_run):
            tmp = run.root.parent / f".{run.root.name}.drive_train_config.json"
            folder.download_file(f"{remote_run}/train_config.json", tmp)
            saved, where = storage.read_json(tmp), f"{folder.describe()}/{remote_run}"
            tmp.unlink()
        elif local is not None and run.train_config.exists():
            saved, where = storage.read_json(run.train_config), str(run.root)
        changes = config_changes(saved, config) if saved else []
        if changes:
            raise InputError(f"The run in {where} was trained with other settings ({'; '.join(changes)}); resuming it would mix "
                             "two runs. Put those settings back to continue it, or set START_OVER = True (start_over=True) to delete "
                             "its checkpoints and train from scratch.")
    if not remote:
        return local
    name = remote[-1]
    if local is not None and int(local.name.split("-")[1]) >= int(name.split("-")[1]):
        return local
    for f, info in folder.entries(remote_run).items():  # configs and loss history: the curve goes on where it stopped
        if not info["dir"]:
            folder.download_file(f"{remote_run}/{f}", run.root / f)
    partial = run.checkpoints / f"{name}.partial"  # not named checkpoint-N until complete
    shutil.rmtree(partial, ignore_errors=True)
    folder.download_dir(f"{remote_run}/checkpoints/{name}", partial)
    dest = run.checkpoints / name
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    print(f"restored {name} from {folder.describe()}/{remote_run} into {run.root}")
    return dest


def pull(folder: DriveFolder | None, rel: str, local: str | Path, skip: Callable[[str], bool] | None = None) -> bool:
    """Download `rel` from Drive into `local` when Drive has it; True if `local` now exists."""
    local = Path(local)
    if folder is not None and folder.exists(rel):
        n = folder.download_dir(rel, local, skip=skip)
        if n:
            print(f"pulled {n} files of {rel} from {folder.describe()}")
    return local.exists()


def push(folder: DriveFolder | None, local: str | Path, rel: str, skip: Callable[[str], bool] | None = None) -> int:
    """Upload a local folder to Drive (no-op without Drive); returns files sent."""
    if folder is None:
        return 0
    t = time.time()
    n = folder.upload_dir(local, rel, skip=skip)
    print(f"{rel}: {n} files sent to {folder.describe()} ({time.time() - t:.1f} s)")
    return n


class DriveSyncCallback(TrainerCallback):
    """Hugging Face TrainerCallback: after every checkpoint save, copy it to Drive.

    Uploads the new checkpoint (its adapter, optimizer, scheduler, RNG and
    trainer state; trainer_state.json last), the run's loss history and
    configs, and once the dataset; then deletes remote checkpoints beyond
    `keep` (default: the trainer's save_total_limit).
    """

    def __init__(self, folder: DriveFolder, remote_run: str = "clone", data_dir: str | Path | None = None,
                 remote_data: str = "data", keep: int | None = None, log: Callable[[str], None] = print):
        self.folder = folder
        self.remote_run = remote_run
        self.data_dir = Path(data_dir) if data_dir else None
        self.remote_data = remote_data
        self.keep = keep
        self.log = log
        self.data_sent = False
        self.uploads: list[dict[str, Any]] = []

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        t = time.time()
        checkpoints = Path(args.output_dir)
        ckpt = checkpoints / f"checkpoint-{state.global_step}"
        run_dir = checkpoints.parent
        sent = upload_checkpoint(self.folder, ckpt, self.remote_run)
        sent += self.folder.upload_dir(run_dir, self.remote_run, skip=lambda f: "/" in f)  # top-level files only
        if self.data_dir is not None and not self.data_sent:
            sent += self.folder.upload_dir(self.data_dir, self.remote_data)
            self.data_sent = True
        gone = prune_checkpoints(self.folder, self.keep or args.save_total_limit or 10**9, self.remote_run)
        size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
        self.uploads.append({"step": state.global_step, "files": sent, "mb": round(size / 2**20, 1), "seconds": round(time.time() - t, 1), "deleted": gone})
        self.log(f"step {state.global_step}: {ckpt.name} ({size / 2**20:.1f} MB) copied to {self.folder.describe()} in {time.time() - t:.1f} s"
                 + (f"; removed {', '.join(gone)}" if gone else ""))
