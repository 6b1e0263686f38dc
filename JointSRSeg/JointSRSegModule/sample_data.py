"""Sample Data module entries for the bundled samples (``Resources/SampleData``, licences in LICENSE.txt).

* a real thick-slice scan: OpenNeuro ds000011 subject 01, T2 with 5 mm axial slices (public domain),
  the input the module is made for -- two clicks to a first run;
* the MNI152 T1 template at 1 mm and its GM/WM labels (a high-resolution reference).

The files ship with the extension (top-level CMakeLists.txt), so the entries load from disk: ``file://``
URIs, which the Sample Data downloader copies into Slicer's shared cache like any download.  Each entry
carries the file's SHA256 (computed here from the shipped file) because the downloader reuses a cached
file *without* a checksum forever -- after an extension update, or when another extension caches a file
of the same name, the stale copy would load.  Cache names are prefixed ``JointSRSeg-`` for the same reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .dependencies import resources_dir

CATEGORY = "JointSRSeg"
CACHE_PREFIX = "JointSRSeg-"
LICENSE_FILE = "LICENSE.txt"


@dataclass(frozen=True)
class Sample:
    """One Sample Data entry: what the user clicks, the shipped file, the node it becomes."""

    name: str  # shown in the Sample Data module
    file: str  # in Resources/SampleData
    node: str  # node name in the scene
    load_type: str  # Slicer file type: VolumeFile, SegmentationFile


SAMPLES = (
    Sample("JointSRSeg T2 5 mm slices (OpenNeuro ds000011)", "ds000011_sub-01_inplaneT2.nii.gz", "T2 5mm",
           "VolumeFile"),
    Sample("JointSRSeg MNI152 T1 (1 mm)", "MNI152_T1_1mm.nii.gz", "MNI152 T1", "VolumeFile"),
    Sample("JointSRSeg MNI152 tissue labels", "MNI152_tissue_1mm.nii.gz", "MNI152 tissue", "SegmentationFile"),
)
THICK_SAMPLE = SAMPLES[0]


def sample_dir() -> Path:
    return resources_dir() / "SampleData"


def sample_files() -> list[Path]:
    """Every file the entries load, and the licence shipped with them."""
    return [sample_dir() / sample.file for sample in SAMPLES] + [sample_dir() / LICENSE_FILE]


def checksum(path: Path) -> str:
    """Sample Data's checksum format, ``SHA256:<hex digest>``."""
    return "SHA256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def register_sample_data(icon: str | Path) -> None:
    """Called once Slicer has started (``startupCompleted``); the SampleData module must be loaded."""
    import SampleData

    for sample in SAMPLES:
        path = sample_dir() / sample.file
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sample.name,
            thumbnailFileName=str(icon),
            uris=path.resolve().as_uri(),
            fileNames=CACHE_PREFIX + sample.file,
            nodeNames=sample.node,
            checksums=checksum(path),
            loadFileType=sample.load_type,  # "loadFileTypes" is newer; the old name is still accepted
        )
