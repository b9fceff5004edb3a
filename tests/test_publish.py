"""make publish: the built book onto gh-pages with ghp-import, refusing smoke books and failed runs."""

import json
import subprocess

import pytest

from deepinfo.book import publish as PB


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "start")
    book = tmp_path / "book"
    (book / "_build" / "html").mkdir(parents=True)
    (book / "_build" / "html" / "index.html").write_text("<html>the book</html>")
    monkeypatch.setattr(PB, "BOOK", book)
    monkeypatch.chdir(root)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    return root, book / "_build" / "html"


def _record(html, profile, **status):
    (html / PB.BUILD_RECORD).write_text(json.dumps({"profile": profile, "built": "today",
                                                    "notebooks": status or {"01_a": "ok"}}))


def test_publish_commits_the_book_to_gh_pages(repo):
    root, html = repo
    _record(html, "cpu")
    message = PB.publish("cpu")
    assert "profile cpu" in message
    assert _git(root, "show", "gh-pages:index.html") == "<html>the book</html>"
    assert ".nojekyll" in _git(root, "ls-tree", "--name-only", "gh-pages")
    assert _git(root, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"  # the work tree is untouched


def test_publish_refuses_smoke_books_failed_runs_and_other_profiles(repo):
    root, html = repo
    with pytest.raises(SystemExit, match="no built book"):
        PB.publish("cpu")
    _record(html, "smoke")
    with pytest.raises(SystemExit, match="smoke profile"):
        PB.publish("smoke")
    with pytest.raises(SystemExit, match="built from profile 'smoke', not 'cpu'"):
        PB.publish("cpu")
    PB.publish("smoke", allow_smoke=True)
    _record(html, "cpu", **{"01_a": "ok", "02_b": "failed"})
    with pytest.raises(SystemExit, match="02_b: failed"):
        PB.publish("cpu")
    PB.publish("cpu", allow_incomplete=True)
