"""Kernel module selection: which .ko files an image needs, from the kernel's
own modules.dep / modules.alias / modules.softdep (as depmod wrote them).

Pure: text in, sets and text out. The builder reads the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DsasError


def module_name(path: str) -> str:
    """kernel/drivers/net/virtio_net.ko -> virtio_net ('-' and '_' are the same)."""
    base = path.rsplit("/", 1)[-1]
    for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


class ModuleError(DsasError, LookupError):
    """A kernel module (or one it needs) that the kernel package does not have."""


@dataclass
class ModuleIndex:
    """What modules.dep, modules.alias and modules.softdep say, for closures."""

    deps: dict[str, list[str]] = field(default_factory=dict)  # path -> dep paths
    by_name: dict[str, str] = field(default_factory=dict)  # name -> path
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (pattern, name)
    softdeps: dict[str, list[str]] = field(default_factory=dict)  # name -> modules/aliases
    builtin: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, dep: str, alias: str = "", softdep: str = "", builtin: str = ""
              ) -> ModuleIndex:
        idx = cls()
        for line in dep.splitlines():
            if ":" not in line:
                continue
            path, _, rest = line.partition(":")
            idx.deps[path] = rest.split()
            idx.by_name[module_name(path)] = path
        for line in alias.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias":
                idx.aliases.append((parts[1], parts[2].replace("-", "_")))
        for line in softdep.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "softdep":
                mods = [p for p in parts[2:] if p not in ("pre:", "post:")]
                idx.softdeps[parts[1].replace("-", "_")] = mods
        idx.builtin = {module_name(p) for p in builtin.split()}
        return idx

    def resolve_alias(self, name: str) -> list[str]:
        """Module names an exact alias (no wildcards) stands for."""
        return [mod for pat, mod in self.aliases if pat == name]

    def closure(self, wanted: list[str]) -> tuple[list[str], list[str]]:
        """(module paths to ship, wanted names that are built into the kernel).

        Follows modules.dep and softdeps (through aliases). Raises ModuleError
        naming a wanted module the kernel has neither as a module nor built in.
        """
        paths: set[str] = set()
        builtin: list[str] = []
        todo = [w.replace("-", "_") for w in wanted]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            path = self.by_name.get(name)
            if path is None:
                if name in self.builtin:
                    builtin.append(name)
                    continue
                targets = self.resolve_alias(name)
                if not targets:
                    raise ModuleError(f"module {name!r}: not in modules.dep nor built in")
                todo.extend(targets)
                continue
            paths.add(path)
            paths.update(self.deps[path])
            todo.extend(self.softdeps.get(name, []))
        for p in list(paths):
            paths.update(self.deps.get(p, []))
        return sorted(paths), sorted(set(builtin))

    def subset_dep(self, paths: list[str]) -> str:
        """modules.dep lines for the shipped modules only, in a stable order."""
        keep = set(paths)
        return "".join(
            f"{p}: {' '.join(d for d in self.deps[p] if d in keep)}".rstrip() + "\n"
            for p in sorted(keep)
        )

    def subset_alias(self, paths: list[str]) -> str:
        names = {module_name(p) for p in paths}
        return "".join(f"alias {pat} {mod}\n" for pat, mod in self.aliases if mod in names)

    def subset_softdep(self, paths: list[str]) -> str:
        names = {module_name(p) for p in paths}
        return "".join(
            f"softdep {n} pre: {' '.join(m)}\n"
            for n, m in sorted(self.softdeps.items())
            if n in names
        )
