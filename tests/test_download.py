import hashlib
import io
import tarfile

from conftest import leftovers, make_dataset

from lasegm.cli import main


def build_archive(tmp_path):
    """A small Task02_Heart.tar in the Decathlon's layout, with macOS ._ files like the real one."""
    src = make_dataset(tmp_path / "src" / "Task02_Heart", n_cases=3, shape=(32, 32, 6))
    archive = tmp_path / "Task02_Heart.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="Task02_Heart")
        for name in ("Task02_Heart/._dataset.json", "Task02_Heart/imagesTr/._la_001.nii.gz"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x00\x05\x16\x07"))
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verifies_and_extracts(tmp_path, capsys):
    archive, md5 = build_archive(tmp_path)
    dest = tmp_path / "data"
    assert main(["--quiet", "download", "--dest", str(dest), "--url", archive.as_uri(), "--md5", md5]) == 0
    root = dest / "Task02_Heart"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["la_001.nii.gz", "la_002.nii.gz", "la_003.nii.gz"]
    assert not list(root.rglob("._*")) and not leftovers(dest)
    # the unpacked folder is usable at once
    assert main(["--quiet", "analyze", "--data", str(root), "--out", str(tmp_path / "a")]) == 0


def test_download_rejects_wrong_checksum_and_cleans_up(tmp_path, capsys):
    archive, _ = build_archive(tmp_path)
    dest = tmp_path / "data"
    assert main(["--quiet", "download", "--dest", str(dest), "--url", archive.as_uri(), "--md5", "0" * 32]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not (dest / "Task02_Heart").exists() and not (dest / "Task02_Heart.tar").exists()
    assert not leftovers(dest)


def test_manual_archive_is_accepted(tmp_path):
    archive, md5 = build_archive(tmp_path)
    assert main(["--quiet", "download", "--dest", str(tmp_path / "d"), "--archive", str(archive), "--md5", md5]) == 0
    assert (tmp_path / "d" / "Task02_Heart" / "dataset.json").exists()


def test_no_network_explains_the_manual_route(tmp_path, capsys):
    code = main(["--quiet", "download", "--dest", str(tmp_path / "d"), "--url", "http://127.0.0.1:9/Task02_Heart.tar"])
    err = capsys.readouterr().err
    assert code == 2 and "--archive" in err and len(err.strip().splitlines()) == 1
    assert not leftovers(tmp_path)


def test_default_destination_is_where_every_command_finds_the_data(tmp_path, monkeypatch, capsys):
    from lasegm.data import default_data_dir

    archive, md5 = build_archive(tmp_path)
    monkeypatch.delenv("LASEGM_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() is None
    assert main(["--quiet", "download", "--url", archive.as_uri(), "--md5", md5]) == 0
    assert "without --data" in capsys.readouterr().out
    assert default_data_dir() == tmp_path / "xdg" / "lasegm" / "Task02_Heart"
    assert main(["--quiet", "analyze", "--out", str(tmp_path / "a")]) == 0  # no --data, no LASEGM_DATA
    monkeypatch.setenv("LASEGM_DATA", str(tmp_path / "elsewhere"))  # the variable wins
    assert default_data_dir() == tmp_path / "elsewhere"
