"""Reading a version folder's files: only regular files, only inside the models directory
(links resolved first), only up to a size.

A version folder comes from whoever may register versions or edit the config, and its files
are read by the gateway's own process: a ``model.onnx`` that links to a file elsewhere on the
machine, a ``metadata.json`` that links to ``/proc/self/mem`` or a FIFO, or a file of many
gigabytes must be refused with a message naming the file, never read. Every read of a
version's files goes through ``FolderRules.read``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from canarygate.config import GatewayConfig, ModelFilesConfig
from canarygate.errors import ConfigError

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
LATER_FILES = ("profile.json", "calibration.npz")
"""The files of a version folder read after it is loaded (drift's reference profile, the
accuracy estimator's calibration)."""

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO does not wait for a writer (it is then refused, not read).
# O_NOFOLLOW: the path opened is the resolved one; a link put in its place meanwhile fails.


@dataclass(frozen=True)
class FolderRules:
    root: Path
    """The resolved models directory: no file read may lie outside it."""
    limits: ModelFilesConfig

    @classmethod
    def of(cls, config: GatewayConfig) -> FolderRules:
        return cls(config.models_dir.resolve(), config.model_files)

    @classmethod
    def within(cls, folder: Path) -> FolderRules:
        """For a folder read on its own (tools, tests): confined to the folder itself, with
        the default limits."""
        return cls(folder.resolve(), ModelFilesConfig())

    def read(self, folder: Path, name: str, where: str) -> bytes | None:
        """The bytes of ``folder/name``, or None when there is no such file. ConfigError,
        naming the file, when it lies outside the models directory (links resolved), is not
        a regular file, is over its size limit or cannot be read."""
        path = folder / name
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError:
            if path.is_symlink():
                raise ConfigError(f"{where}: {name} is a link to a file that does not "
                                  "exist") from None
            return None
        except (OSError, RuntimeError) as exc:  # a loop of links, a name too long
            raise ConfigError(f"{where}: {name} cannot be resolved ({exc})") from None
        if not real.is_relative_to(self.root):
            raise ConfigError(f"{where}: {name} resolves to {real}, outside the models "
                              f"directory {self.root}; only files inside it are read")
        limit, key = self._limit(name)
        try:
            fd = os.open(real, _FLAGS)
        except OSError as exc:
            raise ConfigError(f"{where}: {name} cannot be opened ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{where}: {name} is not a regular file; only regular "
                                  "files are read")
            if info.st_size > limit:
                raise ConfigError(f"{where}: {name} is {info.st_size} bytes, over the limit "
                                  f"of {limit} (model_files.{key})")
            try:
                data = file.read(limit + 1)  # a file may grow after fstat
            except OSError as exc:
                raise ConfigError(f"{where}: {name} cannot be read ({exc.strerror})") from None
        if len(data) > limit:
            raise ConfigError(f"{where}: {name} is over the limit of {limit} bytes "
                              f"(model_files.{key})")
        return data

    def check_later_files(self, folder: Path, where: str) -> None:
        """Check the files the gateway reads after loading the version, so a bad one is
        refused when the version is loaded, not when it is first used (where it is read,
        it is read through ``read`` again)."""
        for name in LATER_FILES:
            self.read(folder, name, where)

    def _limit(self, name: str) -> tuple[int, str]:
        if name == MODEL_FILE:
            return self.limits.max_model_bytes, "max_model_bytes"
        return self.limits.max_file_bytes, "max_file_bytes"
