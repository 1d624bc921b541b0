"""Drive storage: pydrive2 against a loopback stand-in of the Drive v2 API, and the plain-folder backend.

Nothing in clonekit is mocked: pydrive2 and googleapiclient send real HTTP
requests to clonekit.drive_standin on 127.0.0.1 (uploads are resumable, as
pydrive2 does them; multipart and chunked uploads are sent through the same
googleapiclient service).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("pydrive2", reason="needs clonekit[colab]: pip install 'clonekit[colab]'")

from clonekit import drive  # noqa: E402
from clonekit.drive_standin import start_standin  # noqa: E402


@pytest.fixture()
def standin(tmp_path):
    server = start_standin(tmp_path / "store")
    yield server
    server.stop()


def _pydrive(server):
    from google.oauth2.credentials import Credentials

    return drive.connect_pydrive2(Credentials(token=server.token), root_url=server.root_url)


@pytest.fixture(params=["pydrive2", "local"])
def folder(request, tmp_path, standin):
    if request.param == "local":
        return drive.LocalFolder(tmp_path / "mounted" / "MyDrive" / "clonekit")
    return drive.open_pydrive2_folder(_pydrive(standin), "clonekit")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sample(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "train.jsonl").write_text('{"messages": []}\n', encoding="utf-8")
    (root / "sub" / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "empty").write_bytes(b"")
    (root / "sub" / "deeper" / "it's ёлка.txt").write_text("кавычка в имени", encoding="utf-8")
    return root


def test_upload_and_download_round_trip(folder, tmp_path):
    src = _sample(tmp_path / "src")
    assert folder.upload_dir(src, "data") == 4
    assert folder.list("data") == ["sub", "train.jsonl"]
    assert set(folder.walk("data")) == set(_tree(src))
    assert folder.exists("data/sub/deeper/it's ёлка.txt") and not folder.exists("data/nope")
    assert folder.download_dir("data", tmp_path / "back") == 4
    assert _tree(tmp_path / "back") == _tree(src)
    assert folder.download_dir("data", tmp_path / "back") == 0  # identical files are not fetched again


def test_unchanged_files_are_not_sent_and_changed_ones_replace_in_place(folder, tmp_path, standin):
    src = _sample(tmp_path / "src")
    folder.upload_dir(src, "data")
    uploads_before = sum(m in ("POST", "PUT") and "upload" in p for m, p in standin.store.requests)
    assert folder.upload_dir(src, "data") == 0
    if isinstance(folder, drive.PyDrive2Folder):
        assert sum(m in ("POST", "PUT") and "upload" in p for m, p in standin.store.requests) == uploads_before
    (src / "train.jsonl").write_text('{"messages": [1]}\n', encoding="utf-8")
    os.utime(src / "train.jsonl", (1e10, 1e10))  # the local backend compares size and time
    assert folder.upload_dir(src, "data") == 1
    assert folder.list("data").count("train.jsonl") == 1  # updated, not duplicated
    folder.download_file("data/train.jsonl", tmp_path / "t.jsonl")
    assert (tmp_path / "t.jsonl").read_text(encoding="utf-8") == '{"messages": [1]}\n'


def test_delete_removes_a_folder_with_its_files(folder, tmp_path):
    folder.upload_dir(_sample(tmp_path / "src"), "data")
    assert folder.delete("data/sub") and not folder.delete("data/sub")
    assert folder.walk("data") == {"train.jsonl": folder.walk("data")["train.jsonl"]}


def test_missing_remote_folder_is_a_clear_error(folder, tmp_path):
    from clonekit.errors import InputError

    with pytest.raises(InputError, match="does not exist on Drive"):
        folder.download_dir("clone", tmp_path / "x")


def test_standin_speaks_multipart_chunked_paging_and_trash(standin, tmp_path):
    """The other Drive v2 paths pydrive2 users hit, through the same googleapiclient service."""
    from googleapiclient.http import MediaIoBaseUpload

    gd = _pydrive(standin)
    service, http = gd.auth.service, gd.auth.Get_Http_Object()
    blob = os.urandom(700_000)
    chunked = MediaIoBaseUpload(io.BytesIO(blob), "application/octet-stream", chunksize=256 * 1024, resumable=True)
    req = service.files().insert(body={"title": "chunked.bin"}, media_body=chunked)
    done, chunks = None, 0
    while done is None:
        _, done = req.next_chunk(http=http)
        chunks += 1
    assert chunks == 3 and done["fileSize"] == str(len(blob))
    multi = service.files().insert(body={"title": "multi.txt", "mimeType": "text/plain"},
                                   media_body=MediaIoBaseUpload(io.BytesIO(b"multipart body"), "text/plain", resumable=False)).execute(http=http)
    assert any("uploadType=multipart" in p for _, p in standin.store.requests)
    for name, fid in (("chunked.bin", done["id"]), ("multi.txt", multi["id"])):
        gd.CreateFile({"id": fid}).GetContentFile(str(tmp_path / name))
    assert (tmp_path / "chunked.bin").read_bytes() == blob and (tmp_path / "multi.txt").read_bytes() == b"multipart body"

    for i in range(5):
        f = gd.CreateFile({"title": f"page{i}.txt"})
        f.SetContentString(str(i))
        f.Upload()
    pages = list(gd.ListFile({"q": "title != 'multi.txt' and trashed = false", "maxResults": 2}))
    assert [len(p) for p in pages] == [2, 2, 2] and sum("pageToken=" in p for _, p in standin.store.requests) == 2
    listed = [f for p in pages for f in p]
    listed[0].Trash()
    assert len(gd.ListFile({"q": "trashed = false"}).GetList()) == 6
    assert len(gd.ListFile({"q": "trashed = true"}).GetList()) == 1


def test_requests_without_the_token_are_refused(standin):
    from google.oauth2.credentials import Credentials
    from pydrive2.files import ApiRequestError

    class StillWrong(Credentials):
        refreshed = 0

        def refresh(self, request):  # a 401 makes google-auth refresh once and retry
            StillWrong.refreshed += 1
            self.token = "still-wrong"

    bad = drive.connect_pydrive2(StillWrong(token="wrong"), root_url=standin.root_url)
    with pytest.raises(ApiRequestError, match="401"):
        bad.ListFile({"q": "trashed = false"}).GetList()
    assert StillWrong.refreshed >= 1


def test_expired_google_auth_token_is_refreshed_not_sent_to_a_browser_login(standin):
    """Colab's tokens last an hour; pydrive2 must refresh them instead of asking for client_secrets.json."""
    from google.oauth2.credentials import Credentials

    class Refreshing(Credentials):
        def refresh(self, request):  # what google-auth does against Google's token endpoint
            self.token = standin.token

    creds = Refreshing(token=None)
    assert not creds.valid
    gd = drive.connect_pydrive2(creds, root_url=standin.root_url)
    assert gd.ListFile({"q": "trashed = false"}).GetList() == []
    assert creds.token == standin.token


def _checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    ck = root / "checkpoints" / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_bytes(os.urandom(1000))
    (ck / "optimizer.pt").write_bytes(os.urandom(2000))
    if complete:
        (ck / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return ck


def test_sync_keeps_the_newest_checkpoints_and_restore_brings_the_newest_back(folder, tmp_path):
    run = tmp_path / "run"
    for step in (2, 4, 6):
        _checkpoint(run, step)
    (run / "loss_history.json").write_text('[{"step": 2, "loss": 1.0}]')
    drive.sync_run_to_drive(run, folder, keep=2)
    assert drive.remote_checkpoints(folder) == ["checkpoint-4", "checkpoint-6"]
    # a half-uploaded checkpoint (no trainer_state.json yet) is never picked
    _checkpoint(tmp_path / "half", 8, complete=False)
    folder.upload_dir(tmp_path / "half" / "checkpoints" / "checkpoint-8", "clone/checkpoints/checkpoint-8")
    assert drive.remote_checkpoints(folder)[-1] == "checkpoint-6"

    fresh = tmp_path / "new_vm"
    ck = drive.restore_run_from_drive(folder, fresh)
    assert ck == fresh / "checkpoints" / "checkpoint-6"
    assert _tree(ck) == _tree(run / "checkpoints" / "checkpoint-6")
    assert (fresh / "loss_history.json").read_text() == '[{"step": 2, "loss": 1.0}]'
    assert not (fresh / "checkpoints" / "checkpoint-6.partial").exists()
    # a local run that is already as far along is left alone
    _checkpoint(fresh, 10)
    assert drive.restore_run_from_drive(folder, fresh) == fresh / "checkpoints" / "checkpoint-10"


def test_drive_sync_callback_uploads_each_save_and_prunes(folder, tmp_path):
    run, data = tmp_path / "run", _sample(tmp_path / "data")
    (run / "train_config.json").parent.mkdir(parents=True)
    (run / "train_config.json").write_text("{}")
    cb = drive.DriveSyncCallback(folder, data_dir=data, keep=None, log=lambda s: None)
    args = SimpleNamespace(output_dir=str(run / "checkpoints"), save_total_limit=2)
    for step in (10, 20, 30):
        _checkpoint(run, step)
        (run / "loss_history.json").write_text(f'[{{"step": {step}}}]')
        cb.on_save(args, SimpleNamespace(global_step=step, is_world_process_zero=True), None)
    assert drive.remote_checkpoints(folder) == ["checkpoint-20", "checkpoint-30"]
    assert [u["deleted"] for u in cb.uploads] == [[], [], ["checkpoint-10"]]
    assert set(folder.list("clone")) == {"checkpoints", "loss_history.json", "train_config.json"}
    folder.download_file("clone/loss_history.json", tmp_path / "h.json")
    assert (tmp_path / "h.json").read_text() == '[{"step": 30}]'
    assert set(folder.walk("data")) == set(_tree(data))


def test_connect_modes(tmp_path, monkeypatch):
    assert drive.connect("none") is None
    local = drive.connect(str(tmp_path / "d"))
    assert isinstance(local, drive.LocalFolder) and (tmp_path / "d").is_dir()
    monkeypatch.setenv("CLONEKIT_DRIVE_STANDIN", "1")
    monkeypatch.setenv("CLONEKIT_DRIVE_STANDIN_DIR", str(tmp_path / "standin"))
    f = drive.connect("auto")
    assert isinstance(f, drive.PyDrive2Folder) and f.describe().startswith("Drive stand-in http://127.0.0.1:")
    f.upload_file(_sample(tmp_path / "s") / "train.jsonl", "x/train.jsonl")
    again = drive.connect("auto")  # the next notebook: same store, same files
    assert again.list("x") == ["train.jsonl"]
    monkeypatch.delenv("CLONEKIT_DRIVE_STANDIN")
    monkeypatch.setenv("CLONEKIT_SMALL", "1")  # nbmake's setting: the notebooks' "auto" gets the stand-in too
    assert drive.use_standin() and drive.connect("auto").list("x") == ["train.jsonl"]
    monkeypatch.setenv("CLONEKIT_DRIVE_STANDIN", "0")
    assert not drive.use_standin()
    monkeypatch.delenv("CLONEKIT_DRIVE_DIR", raising=False)
    assert drive.connect("auto") is None  # not on Colab, no Drive asked for
    monkeypatch.setenv("CLONEKIT_DRIVE_DIR", str(tmp_path / "dd"))
    assert drive.connect("auto").describe() == str(tmp_path / "dd")
    from clonekit.errors import InputError

    with pytest.raises(InputError, match="only on Colab"):
        drive.connect("mount")
    with pytest.raises(InputError, match="Colab's login"):
        drive.connect("pydrive2")


def test_pull_and_push_without_drive_are_harmless(tmp_path):
    assert drive.push(None, tmp_path, "data") == 0
    assert drive.pull(None, "data", tmp_path / "missing") is False


def test_a_run_with_other_settings_is_not_resumed_unless_starting_over(folder, tmp_path):
    from clonekit.errors import InputError
    from clonekit.train import TrainConfig

    run = tmp_path / "run"
    _checkpoint(run, 2)
    old = TrainConfig(out_dir=str(run), lora_r=16)
    (run / "train_config.json").write_text(__import__("json").dumps({"type": "TrainConfig", **old.__dict__}))
    drive.sync_run_to_drive(run, folder)
    new_vm = tmp_path / "new_vm"
    assert drive.restore_run_from_drive(folder, new_vm, config=old) == new_vm / "checkpoints" / "checkpoint-2"
    changed = TrainConfig(out_dir=str(new_vm), lora_r=32)
    with pytest.raises(InputError, match=r"lora_r: 16 -> 32.*START_OVER"):
        drive.restore_run_from_drive(folder, new_vm, config=changed)
    with pytest.raises(InputError, match="lora_r"):  # the local copy is checked too, without Drive
        drive.restore_run_from_drive(None, new_vm, config=changed)
    assert drive.restore_run_from_drive(folder, new_vm, config=changed, start_over=True) is None
    assert drive.remote_checkpoints(folder) == [] and not (new_vm / "checkpoints").exists()
    assert drive.restore_run_from_drive(folder, new_vm, config=changed) is None
