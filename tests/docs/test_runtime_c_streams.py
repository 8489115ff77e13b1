"""docs/runtime-c.md's stream handler compiles against the header."""

import subprocess

from docblocks import REPO, doc_block


def test_stream_handler_compiles(tmp_path):
    src = tmp_path / "stream.c"
    src.write_text(doc_block("runtime-c.md", "stream.c: a handler")
                   + "\nvoid *use = (void *) handle_count;\n")
    subprocess.run(["cc", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                    f"-I{REPO / 'core' / 'include'}", str(src)], check=True)
