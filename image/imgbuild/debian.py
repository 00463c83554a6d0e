"""The Debian side of the build: the mirror, what it resolves to, the header packages.

A private apt (its own lists and an empty dpkg status in the cache directory; none of the
host's apt.conf.d, preferences or installed packages) answers the question mmdebstrap's
apt would: which versions of Debian's Essential:yes set plus the listed packages the
mirror serves now. Those versions are an input of the build, and the image is built from
exactly them.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

SUITE = "bookworm"
ARCH = "amd64"
COMPONENT = "main"
APT_ETC = "/etc/apt"
#: Used when apt has no bookworm entries (a machine of another release).
DEFAULT_URIS = {"": "http://deb.debian.org/debian",
                "-updates": "http://deb.debian.org/debian",
                "-security": "http://deb.debian.org/debian-security"}
#: What mmdebstrap's essential variant selects; apt would count itself in without the option.
ESSENTIAL = "?essential"
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ")


class MirrorError(RuntimeError):
    """The mirror could not be read, or could not give what the recipe asks for."""


@dataclass(frozen=True)
class Source:
    uri: str
    suite: str
    signed_by: str = ""

    def line(self) -> str:
        opts = f"[arch={ARCH}{' signed-by=' + self.signed_by if self.signed_by else ''}] "
        return f"deb {opts}{self.uri} {self.suite} {COMPONENT}"


def _ours(suite: str, components: Iterable[str]) -> bool:
    return (suite == SUITE or suite.startswith(SUITE + "-")) and COMPONENT in components


def _one_line(path: str) -> List[Source]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            signed_by = ""
            if words and words[0].startswith("["):
                opts = []
                while words:
                    word = words.pop(0)
                    opts.append(word.strip("[]"))
                    if word.endswith("]"):
                        break
                for opt in opts:
                    if opt.startswith("signed-by="):
                        signed_by = opt.split("=", 1)[1]
            if len(words) >= 3 and _ours(words[1], words[2:]):
                out.append(Source(words[0].rstrip("/"), words[1], signed_by))
    return out


def _deb822(path: str) -> List[Source]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        stanzas = re.split(r"\n\s*\n", f.read())
    for stanza in stanzas:
        fields: Dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1].isspace() and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        signed_by = fields.get("signed-by", "")
        if "\n" in signed_by or not signed_by.startswith("/"):
            signed_by = ""  # an inline key: leave the choice to apt's trusted keys
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                if _ours(suite, fields.get("components", "").split()):
                    out.append(Source(uri.rstrip("/"), suite, signed_by))
    return out


def configured_sources(etc: str = APT_ETC) -> List[Source]:
    """The bookworm ``main`` entries of this machine's apt sources, in apt's order."""
    found: List[Source] = []
    main = os.path.join(etc, "sources.list")
    if os.path.exists(main):
        found += _one_line(main)
    for path in sorted(glob.glob(os.path.join(etc, "sources.list.d", "*"))):
        if path.endswith(".list"):
            found += _one_line(path)
        elif path.endswith(".sources"):
            found += _deb822(path)
    return list(dict.fromkeys(found))


def default_sources() -> List[Source]:
    return [Source(uri, SUITE + tail) for tail, uri in DEFAULT_URIS.items()]


class Apt:
    """apt-get and apt-cache on private state under ``home`` and the given sources."""

    def __init__(self, home: str, sources: List[Source]) -> None:
        self.home = home
        self.sources = sources
        for sub in ("lists/partial", "archives/partial", "etc/apt.conf.d",
                    "etc/preferences.d", "etc/sources.list.d"):
            os.makedirs(os.path.join(home, sub), exist_ok=True)
        self.sources_list = os.path.join(home, "etc", "sources.list")
        with open(self.sources_list, "w", encoding="utf-8") as f:
            f.write("".join(s.line() + "\n" for s in sources))
        self.status = os.path.join(home, "status")
        open(self.status, "w").close()

    def options(self) -> List[str]:
        h = self.home
        opts = {
            "Dir::Etc": f"{h}/etc",
            "Dir::Etc::SourceList": self.sources_list,
            "Dir::Etc::SourceParts": f"{h}/etc/sources.list.d",
            "Dir::Etc::Parts": f"{h}/etc/apt.conf.d",
            "Dir::Etc::PreferencesParts": f"{h}/etc/preferences.d",
            "Dir::Etc::Trusted": f"{APT_ETC}/trusted.gpg",
            "Dir::Etc::TrustedParts": f"{APT_ETC}/trusted.gpg.d",
            "Dir::State": h,
            "Dir::State::Lists": f"{h}/lists",
            "Dir::State::status": self.status,
            "Dir::Cache": h,
            "Dir::Cache::Archives": f"{h}/archives",
            "Dir::Cache::pkgcache": "",
            "Dir::Cache::srcpkgcache": "",
            "Debug::NoLocking": "true",
            "APT::Architecture": ARCH,
            "APT::Architectures": ARCH,
            "APT::Install-Recommends": "false",
            "Acquire::Languages": "none",
            "pkgCacheGen::ForceEssential": ",",
        }
        out = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _run(self, tool: str, args: List[str], cwd: Optional[str] = None) -> str:
        env = dict(os.environ, LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
        env.pop("APT_CONFIG", None)
        proc = subprocess.run([tool, *self.options(), *args], capture_output=True, text=True,
                              env=env, cwd=cwd, check=False)
        errors = [line[3:] for line in proc.stderr.splitlines()
                  if line.startswith(("E: ", "W: Failed", "Err:"))]
        if proc.returncode != 0 or any(line.startswith("Err:") for line in
                                       proc.stdout.splitlines()):
            detail = "; ".join(errors) or proc.stderr.strip() or proc.stdout.strip()
            raise MirrorError(f"{tool} {args[0]} failed: {detail}")
        return proc.stdout

    def update(self) -> None:
        """Fetch the mirror's indices (only what changed since the last time)."""
        try:
            self._run("apt-get", ["update", "-q"])
        except MirrorError as err:
            raise MirrorError(f"cannot read the Debian mirror ({err}); check the network and "
                              f"the bookworm entries in {APT_ETC}/sources.list*") from None

    def resolve(self, packages: List[str], essential: bool = True) -> Dict[str, str]:
        """name -> version of everything installing ``packages`` (and Essential:yes) takes
        on an empty system, without recommends."""
        want = ([ESSENTIAL] if essential else []) + packages
        out = self._run("apt-get", ["install", "-s", "-q", *want])
        found = {m.group(1): m.group(2) for m in map(_INST.match, out.splitlines()) if m}
        missing = [p for p in packages if p not in found]
        if missing:
            raise MirrorError(f"the mirror does not resolve {', '.join(missing)}")
        return dict(sorted(found.items()))

    def header_packages(self, meta: str) -> Dict[str, str]:
        """The versioned header packages ``meta`` (e.g. linux-headers-amd64) stands for:
        its linux-headers-X-amd64 and linux-headers-X-common, nothing they depend on."""
        closure = self.resolve([meta], essential=False)
        found = {name: v for name, v in closure.items()
                 if re.match(r"linux-headers-\d", name)}
        if not any(n.endswith("-common") for n in found) or len(found) < 2:
            raise MirrorError(f"{meta} does not resolve to a header package and its -common "
                              f"half (got {', '.join(sorted(closure)) or 'nothing'})")
        return found

    def download(self, packages: Dict[str, str]) -> List[str]:
        """The .deb files of ``packages`` (name -> version), kept in the cache."""
        archives = os.path.join(self.home, "archives")
        paths = []
        for name, version in packages.items():
            pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
            hits = glob.glob(os.path.join(archives, pattern))
            if not hits:
                self._run("apt-get", ["download", "-q", f"{name}={version}"], cwd=archives)
                hits = glob.glob(os.path.join(archives, pattern))
            if not hits:
                raise MirrorError(f"apt-get download {name}={version} left no .deb behind")
            paths.append(hits[0])
        return paths
