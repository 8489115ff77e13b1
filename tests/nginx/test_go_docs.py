"""docs/runtime-go.md's streams, events and metadata: its stream.go built
as a module outside the shim (through the doc's go.mod) and its
nginx.conf run as written, with the replies the doc promises."""

import os
import subprocess
import sys

from gohelp import GO
from harness import REPO

sys.path.insert(0, str(REPO / "tests" / "docs"))

from docblocks import doc_block, doc_block_after, run_doc_nginx  # noqa: E402


def test_streams_events_metadata_doc(tmp_path, nbffi_build):
    mod = tmp_path / "stream"
    mod.mkdir()
    (mod / "stream.go").write_text(doc_block("runtime-go.md", "stream.go"))
    gomod = doc_block("runtime-go.md", "go.mod").split("\n", 1)[1]
    (mod / "go.mod").write_text(gomod.replace("/path/to/nbffi", str(REPO)))
    r = subprocess.run(
        [GO, "build", "-buildmode=c-shared", "-o",
         str(tmp_path / "libstream.so"), "."], cwd=mod,
        env={**os.environ, "GOFLAGS": "-buildvcs=false",
             "CGO_LDFLAGS": f"-L{nbffi_build / 'core'}"},
        capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    ngx = run_doc_nginx(tmp_path / "doc", doc_block_after(
        "runtime-go.md", "stream.go's runtime in nginx"),
        [("/srv/nbffi", tmp_path),
         (f"{REPO}/build", nbffi_build)])
    ngx.assert_log(r"whoami, request_id: r-1")
