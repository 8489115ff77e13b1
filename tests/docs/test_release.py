"""One version everywhere a release writes it, a LICENSE, a CHANGELOG
entry for it, and a rockspec named after it."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def read(rel):
    return (REPO / rel).read_text()


def version():
    """The release: meson.build's project version."""
    return re.search(r"version\s*:\s*'([^']+)'", read("meson.build")).group(1)


def found_versions():
    """{where: the version written there}."""
    h = read("core/include/nbffi.h")
    parts = [re.search(rf"#define NBFFI_VERSION_{p}\s+(\d+)", h).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    [rock] = REPO.glob("lua-resty-nbffi-*.rockspec")
    spec = rock.read_text()
    return {
        "core/include/nbffi.h": ".".join(parts),
        "lua/resty/nbffi.lua": re.search(r'_VERSION = "([^"]+)"',
                                         read("lua/resty/nbffi.lua")).group(1),
        "shims/python/pyproject.toml": re.search(
            r'^version = "([^"]+)"', read("shims/python/pyproject.toml"),
            re.M).group(1),
        "shims/python/nbffi/__init__.py": re.search(
            r'__version__ = "([^"]+)"',
            read("shims/python/nbffi/__init__.py")).group(1),
        "shims/java/pom.xml": re.search(
            r"<artifactId>nbffi</artifactId>\s*<version>([^<]+)</version>",
            read("shims/java/pom.xml")).group(1),
        "shims/go/version.go": re.search(r'Version = "([^"]+)"',
                                         read("shims/go/version.go")).group(1),
        f"{rock.name} (name)": re.match(r"lua-resty-nbffi-(.+)-\d+\.rockspec",
                                        rock.name).group(1),
        f"{rock.name} (version)": re.search(r'^version = "(.+)-\d+"', spec,
                                            re.M).group(1),
        f"{rock.name} (tag)": re.search(r'tag = "v([^"]+)"', spec).group(1),
    }


def test_one_version_everywhere():
    want = version()
    wrong = {k: v for k, v in found_versions().items() if v != want}
    assert not wrong, f"meson.build says {want}; these differ: {wrong}"


def test_changelog_has_the_version():
    heads = re.findall(r"^## (\d+\.\d+\.\d+)", read("CHANGELOG.md"), re.M)
    assert heads and heads[0] == version(), heads


def test_license_is_apache_2():
    text = read("LICENSE")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for f in ("lua-resty-nbffi-%s-1.rockspec" % version(),
              "shims/python/pyproject.toml"):
        assert "Apache-2.0" in read(f), f
    assert "Apache-2.0" in read("meson.build")


def test_docs_name_this_version():
    """Docs that name a jar, a rockspec or a module version name this one."""
    v = version()
    stale = []
    for doc in [REPO / "README.md", *REPO.glob("docs/*.md"),
                *REPO.glob("shims/*/README.md"),
                *REPO.glob("examples/*/README.md")]:
        for m in re.finditer(r"(?:nbffi-|nbffi/|nbffi:|rockspec |shims/go@v|"
                             r"<artifactId>nbffi</artifactId>\s*<version>)"
                             r"(\d+\.\d+\.\d+)",
                             doc.read_text()):
            if m.group(1) != v and doc.name != "CHANGELOG.md":
                stale.append(f"{doc.relative_to(REPO)}: {m.group(0)}")
    assert not stale, stale
