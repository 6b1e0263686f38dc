"""What an installed extension contains, read from the CMake lists without CMake or Slicer.

A small interpreter for the CMake subset the lists use (``set``, ``${VAR}`` expansion,
``add_subdirectory``, ``slicerMacroBuildScriptedModule``, ``ctkMacroCompilePythonScript``), with
the copy and install rules of those two macros as Slicer and CTK define them:

* ``slicerMacroBuildScriptedModule`` (Slicer ``CMake/SlicerMacroBuildScriptedModule.cmake``) calls
  ``ctkMacroCompilePythonScript`` with ``DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}``,
  ``INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}`` and ``NO_INSTALL_SUBDIR`` (unless ``WITH_SUBDIR``);
* ``ctkMacroCompilePythonScript`` (CTK ``CMake/ctkMacroCompilePythonScript.cmake``) copies each script
  and resource ``SOURCE_DIR/<path>`` to ``DESTINATION_DIR/<path>`` (a ``.py`` suffix is appended to
  scripts without one) and installs the directory ``DESTINATION_DIR`` (its contents with
  ``NO_INSTALL_SUBDIR``, else the folder itself) into ``INSTALL_DIR``.  A path with ``../`` therefore
  lands outside ``DESTINATION_DIR`` and is never installed.

:func:`installed_files` returns ``{source path (repo-relative): installed path (relative to the
install prefix)}``, with ``None`` for a listed file that would not be installed.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

SCRIPTED_DIR = "lib/Slicer-X.Y/qt-scripted-modules"  # Slicer_QTSCRIPTEDMODULES_LIB_DIR (and its install twin)
BUILD = "<build>"
IGNORED = {
    "cmake_minimum_required", "project", "find_package", "include", "if", "else", "elseif", "endif",
    "message", "slicer_add_python_unittest",
}


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """``name(arg ...)`` calls with comments removed; quoted arguments keep their quotes."""
    text = "\n".join(_strip_comment(line) for line in text.splitlines())
    calls = []
    for match in re.finditer(r"(\w+)\s*\(((?:[^()\"]|\"[^\"]*\"|\([^()]*\))*)\)", text):
        args = re.findall(r'"[^"]*"|[^\s"]+', match.group(2))
        calls.append((match.group(1).lower(), args))
    return calls


def _strip_comment(line: str) -> str:
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


class CMakeModel:
    def __init__(self, root: Path):
        self.root = root
        self.copies: list[tuple[str, str, str, str, bool]] = []  # (src, tgt, dest_dir, install_dir, subdir)

    def _expand(self, arg: str, variables: dict[str, str]) -> list[str]:
        quoted = arg.startswith('"') and arg.endswith('"')
        value = arg[1:-1] if quoted else arg
        for _ in range(5):
            value = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), value)
        return [v for v in value.split(";") if v != ""]

    def run(self, folder: Path, variables: dict[str, str]) -> None:
        variables = dict(variables, CMAKE_CURRENT_SOURCE_DIR=folder.relative_to(self.root).as_posix() or ".")
        for name, raw in _commands((folder / "CMakeLists.txt").read_text(encoding="utf-8")):
            args = [a for r in raw for a in self._expand(r, variables)]
            if name == "set":
                variables[args[0]] = ";".join(args[1:])
            elif name == "add_subdirectory":
                self.run(folder / args[0], variables)
            elif name == "slicermacrobuildscriptedmodule":
                kw = _keywords(args, ("NAME",), ("SCRIPTS", "RESOURCES"), ("WITH_GENERIC_TESTS", "WITH_SUBDIR"))
                dest = f"{BUILD}/{SCRIPTED_DIR}"
                if kw["WITH_SUBDIR"]:
                    dest += "/" + folder.name
                self._compile(variables["CMAKE_CURRENT_SOURCE_DIR"], kw["SCRIPTS"], kw["RESOURCES"], dest,
                              SCRIPTED_DIR, subdir=bool(kw["WITH_SUBDIR"]))
            elif name == "ctkmacrocompilepythonscript":
                kw = _keywords(args, ("TARGET_NAME", "SOURCE_DIR", "DESTINATION_DIR", "INSTALL_DIR"),
                               ("SCRIPTS", "RESOURCES"), ("NO_INSTALL_SUBDIR", "GLOBAL_TARGET"))
                source = kw["SOURCE_DIR"] or variables["CMAKE_CURRENT_SOURCE_DIR"]
                self._compile(source, kw["SCRIPTS"], kw["RESOURCES"], kw["DESTINATION_DIR"], kw["INSTALL_DIR"],
                              subdir=not kw["NO_INSTALL_SUBDIR"])
            elif name not in IGNORED:
                raise ValueError(f"{folder}/CMakeLists.txt: {name}() is not understood by Testing/cmake_layout.py")

    def _compile(self, source, scripts, resources, dest, install, subdir) -> None:
        assert dest and install, "DESTINATION_DIR and INSTALL_DIR are mandatory"
        for file in list(scripts) + list(resources):
            if file in scripts and not file.endswith(".py"):
                file += ".py"
            src = posixpath.normpath(posixpath.join(source, file))
            tgt = posixpath.normpath(posixpath.join(dest, file))
            self.copies.append((src, tgt, posixpath.normpath(dest), install, subdir))

    def installed(self) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for src, tgt, dest, install, subdir in self.copies:
            inside = tgt.startswith(dest + "/")
            if not inside:
                result.setdefault(src, None)
                continue
            relative = tgt[len(dest) + 1:]
            if subdir:
                relative = posixpath.basename(dest) + "/" + relative
            result[src] = posixpath.join(install, relative)
        return result


def _keywords(args, single, multi, flags) -> dict:
    out: dict = {k: None for k in single} | {k: [] for k in multi} | {k: False for k in flags}
    current = None
    for arg in args:
        if arg in single or arg in multi:
            current = arg
        elif arg in flags:
            out[arg], current = True, None
        elif current in single:
            out[current], current = arg, None
        elif current in multi:
            out[current].append(arg)
        else:
            raise ValueError(f"unexpected argument {arg!r}")
    return out


def installed_files(root: Path) -> dict[str, str | None]:
    model = CMakeModel(root)
    model.run(root, {
        "CMAKE_BINARY_DIR": BUILD,
        "Slicer_QTSCRIPTEDMODULES_LIB_DIR": SCRIPTED_DIR,
        "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR": SCRIPTED_DIR,
    })
    return model.installed()
